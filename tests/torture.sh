#!/usr/bin/env bash
# torture.sh — every long job survives SIGKILL at any moment. For each of `rar train-tokenizer`,
# `rar tokenize`, `rar train` and `rar sample --out x.npz` (tiny models, CPU):
#   1. one uninterrupted run gives the reference outputs (and counts the job's crash points: the
#      places between writing a file and renaming it, between a checkpoint's files, ...);
#   2. the same command is started again and again in a fresh folder, each time killed with SIGKILL
#      — at a crash point chosen at random (RAR_CRASH_AT=N, util/crash_point.h: inside checkpoint
#      and shard writes) or after a random delay (anywhere) — and rerun (with --resume where the
#      command has it) until it completes;
#   3. every output file must equal the reference byte for byte (metrics.jsonl without its timing
#      fields), and no temp file may be left behind.
# Then a full disk: `rar train` resumed on a tiny tmpfs must stop with a one-line error and leave
# the previous checkpoint intact.
#
#   tests/torture.sh RAR [KILLS]      KILLS kills per job (default 3: the short form `make test` runs)
#   SWEEP=1 tests/torture.sh RAR      additionally kill once at every crash point of every job (long;
#                                     SWEEP_STEP=20: every 20th, plus the first and last of each kind)
#   TORTURE_JOBS="train sample" ...           some jobs only
set -euo pipefail

RAR=$(readlink -f "$1")
KILLS=${2:-3}
TORTURE_JOBS=${TORTURE_JOBS:-"tok tokenize train sample"}
SEED=${TORTURE_SEED:-$RANDOM}
RANDOM=$SEED
W=$(mktemp -d "${TMPDIR:-/tmp}/rar_torture_XXXXXX")
trap 'rm -rf "$W"' EXIT
export OMP_NUM_THREADS=1
echo "torture: kills per job $KILLS, seed $SEED, work $W"

fail() { echo "torture: FAIL: $*" >&2; exit 1; }
trap '[[ $- == *e* ]] && echo "torture: FAIL: line $LINENO: \"$BASH_COMMAND\" exited with $?" >&2' ERR  # not where a failure is expected (set +e)

# ---------------------------------------------------------------- inputs: 48 grey 8x8 images, 3 classes
python3 - "$W" <<'EOF'
import struct, sys, random
w = sys.argv[1]
def npy(path, descr, shape, payload):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, ", ".join(map(str, shape)) + ("," if len(shape) == 1 else ""))
    h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
    open(path, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + payload)
random.seed(7)
n = 48
pix = bytes(min(255, max(0, (x * 30 + y * 20 * (i % 3) + random.randint(0, 40)))) for i in range(n) for y in range(8) for x in range(8))
npy(w + "/images.npy", "|u1", (n, 8, 8, 1), pix)
npy(w + "/images_labels.npy", "<i8", (n,), b"".join(struct.pack("<q", i % 3) for i in range(n)))
EOF

TOK_ARGS="--device cpu --steps 8 model.vq_model.codebook_size=16 model.vq_model.token_size=4 \
model.vq_model.hidden_channels=8 model.vq_model.channel_mult=[1,2] model.vq_model.num_res_blocks=1 \
model.vq_model.norm_groups=4 data.pad=0 training.per_gpu_batch_size=8 lr_scheduler.params.warmup_steps=2 \
experiment.log_every=1 experiment.eval_every=0 experiment.generate_every=4 experiment.save_every=2 \
experiment.keep_last=2 losses.dead_code_every=2 losses.dead_code_threshold=0.5"
RAR_ARGS="--device cpu --steps 8 model.vq_model.codebook_size=16 model.generator.hidden_size=32 \
model.generator.num_hidden_layers=2 model.generator.num_attention_heads=2 model.generator.intermediate_size=64 \
model.generator.image_seq_len=16 model.generator.condition_num_classes=3 training.mixed_precision=no \
training.per_gpu_batch_size=4 training.gradient_accumulation_steps=2 model.generator.randomness_anneal_start=2 \
model.generator.randomness_anneal_end=6 lr_scheduler.params.warmup_steps=2 experiment.log_every=1 \
experiment.save_every=2 experiment.keep_last=3 training.use_ema=true experiment.generate_every=0"

# Each job runs in its own folder with relative paths, so that the configs it saves are the same
# wherever it runs; its inputs are linked in.
job_cmd() {
  case $1 in
    tok) echo "train-tokenizer --data images.npy --test none --out out --resume $TOK_ARGS" ;;
    tokenize) echo "tokenize --tokenizer tok.safetensors --data images.npy --out out/x.rartok --chunk 8 --batch 4" ;;
    train) echo "train --data x.rartok --out out --resume $RAR_ARGS" ;;
    sample) echo "sample --generator gen.safetensors --tokenizer tok.safetensors --all-classes --per-class 4 \
--batch 2 --device cpu --cfg 2.0 --seed 3 --out out/s.npz" ;;
  esac
}
prepare() {  # prepare JOB DIR: a fresh folder with the job's inputs
  rm -rf "$2" && mkdir -p "$2/out"
  ln -s "$W/images.npy" "$2/images.npy"
  ln -s "$W/images_labels.npy" "$2/images_labels.npy"
  [ -f "$W/ref/tok/out/tokenizer.safetensors" ] && ln -s "$W/ref/tok/out/tokenizer.safetensors" "$2/tok.safetensors"
  [ -f "$W/ref/tokenize/out/x.rartok" ] && ln -s "$W/ref/tokenize/out/x.rartok" "$2/x.rartok"
  [ -f "$W/ref/train/out/generator.safetensors" ] && ln -s "$W/ref/train/out/generator.safetensors" "$2/gen.safetensors"
  true
}
run_job() {  # run_job JOB DIR [env...]: the exit status
  local job=$1 dir=$2; shift 2
  { (cd "$dir" && exec env "$@" "$RAR" $(job_cmd "$job") >>run.log 2>&1); } 2>/dev/null && return 0 || return $?
}

# metrics.jsonl without the fields that measure time
normalized_metrics() {
  python3 - "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    print(json.dumps({k: v for k, v in row.items() if not (k.endswith("_per_s") or k.endswith("_s") or k == "minutes")},
                     sort_keys=True))
EOF
}

# A TensorBoard event file's records without what measures time: each Event's wall_time (field 1)
# and the scalars that metrics.jsonl's timing fields become (the records' CRCs are checked by
# tests/test_training_infra.cpp through protobuf).
normalized_events() {
  python3 - "$1" <<'EOF'
import struct, sys
def varint(b, i):
    v = s = 0
    while True:
        c = b[i]; i += 1; v |= (c & 0x7F) << s; s += 7
        if c < 0x80: return v, i
def fields(b):  # (number, value) of each field of one message
    i, out = 0, []
    while i < len(b):
        key, i = varint(b, i)
        n, t = key >> 3, key & 7
        if t == 0: v, i = varint(b, i)
        elif t == 1: v, i = b[i:i + 8], i + 8
        elif t == 5: v, i = b[i:i + 4], i + 4
        elif t == 2:
            ln, i = varint(b, i); v, i = b[i:i + ln], i + ln
        else: sys.exit("wire type %d" % t)
        out.append((n, v))
    return out
timing = lambda tag: tag.endswith("_per_s") or tag.endswith("_s") or tag == "minutes"
data = open(sys.argv[1], "rb").read()
at = 0
while at < len(data):
    n = struct.unpack_from("<Q", data, at)[0]
    msg = data[at + 12:at + 12 + n]
    if len(msg) != n: sys.exit("record cut short")
    at += 16 + n
    kept = []
    for num, v in fields(msg):
        if num == 1: continue  # wall_time
        if num == 5:  # Summary: its values without the timing scalars
            v = [f for f in (fields(val) for _, val in fields(v)) if not timing(dict(f)[1].decode())]
        kept.append((num, v))
    print(repr(kept))
EOF
}

compare() {  # compare JOB DIR: outputs byte for byte against the reference
  local ref="$W/ref/$1/out" got="$2/out"
  local a b
  # an event file's name holds the time its run started: compared by what it holds
  a=$(cd "$ref" && find . -type f | sed 's/tfevents\.[0-9]*\./tfevents.T./' | sort) || true
  b=$(cd "$got" && find . -type f | sed 's/tfevents\.[0-9]*\./tfevents.T./' | sort) || true
  [ "$a" = "$b" ] || fail "$1: other files than the uninterrupted run:$(diff <(echo "$a") <(echo "$b") | tr '\n' ' ')"
  for f in $a; do
    if [[ "$f" == */events.out.tfevents.T.* ]]; then
      local fr fg
      fr=$(echo "$ref"/${f/tfevents.T./tfevents.*.}) fg=$(echo "$got"/${f/tfevents.T./tfevents.*.})
      cmp -s <(normalized_events "$fr") <(normalized_events "$fg") || fail "$1: $f differs (beyond wall times and timings)"
    elif [ "$(basename "$f")" = metrics.jsonl ]; then
      cmp -s <(normalized_metrics "$ref/$f") <(normalized_metrics "$got/$f") || fail "$1: $f differs (beyond timings)"
    elif [ "$(basename "$f")" = .lock ]; then
      :  # the output's lock file holds the pid of its last owner (util/output_lock.h): not an output
    else
      cmp -s "$ref/$f" "$got/$f" || fail "$1: $f differs from the uninterrupted run"
    fi
  done
}

ms_now() { date +%s%3N; }

declare -A DUR POINTS
# References for the jobs asked for and those whose outputs they read (in pipeline order).
last=0 i=0
for job in tok tokenize train sample; do i=$((i + 1)); [[ " $TORTURE_JOBS " == *" $job "* ]] && last=$i; done
i=0
for job in tok tokenize train sample; do
  i=$((i + 1)); (( i <= last )) || break
  prepare "$job" "$W/ref/$job"
  t0=$(ms_now)
  run_job "$job" "$W/ref/$job" RAR_CRASH_LOG="$W/ref/$job/points" || fail "$job: reference run failed: $(tail -3 "$W/ref/$job/run.log")"
  DUR[$job]=$(( $(ms_now) - t0 ))
  POINTS[$job]=$(wc -l < "$W/ref/$job/points")
  echo "torture: $job: reference in ${DUR[$job]} ms, ${POINTS[$job]} crash points"
done

for job in $TORTURE_JOBS; do
  dur=${DUR[$job]} points=${POINTS[$job]}
  # ---------------------------------------------------------------- killed again and again
  dir="$W/kill/$job"
  prepare "$job" "$dir"
  kills=0 log=""
  for ((k = 0; k < KILLS; ++k)); do
    if (( k % 2 == 0 )); then  # at a crash point (inside a write)
      n=$(( RANDOM % points + 1 ))
      set +e; run_job "$job" "$dir" RAR_CRASH_AT=$n; st=$?; set -e
      log+=" point#$n"
    else  # after a random delay (anywhere: start-up, computing, writing)
      delay=$(( RANDOM % (dur + 1) ))
      (cd "$dir" && exec "$RAR" $(job_cmd "$job") >>run.log 2>&1) &
      pid=$!
      sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
      kill -9 "$pid" 2>/dev/null || true
      set +e; { wait "$pid"; } 2>/dev/null; st=$?; set -e
      log+=" ${delay}ms"
    fi
    [ "$st" -eq 0 ] || [ "$st" -eq 137 ] || fail "$job: a run after a kill failed (status $st):$(tail -3 "$dir/run.log")"
    [ "$st" -eq 137 ] && kills=$((kills + 1))
  done
  run_job "$job" "$dir" || fail "$job: the rerun after kills failed: $(tail -3 "$dir/run.log")"
  compare "$job" "$dir"
  echo "torture: $job: $kills kills ($log), rerun equals the uninterrupted run"

  # ---------------------------------------------------------------- long form: every crash point
  if [ "${SWEEP:-0}" = 1 ]; then
    # every SWEEP_STEP-th crash point, plus the first and last of each kind (name)
    step=${SWEEP_STEP:-1}
    indices=$( { seq 1 "$step" "$points"; awk '!first[$2]++ { print $1 } { last[$2] = $1 } END { for (k in last) print last[k] }' \
      "$W/ref/$job/points"; } | sort -nu)
    swept=0
    for n in $indices; do
      swept=$((swept + 1))
      prepare "$job" "$W/sweep"
      set +e; run_job "$job" "$W/sweep" RAR_CRASH_AT=$n; st=$?; set -e
      [ "$st" -eq 137 ] || fail "$job: crash point $n did not kill (status $st)"
      run_job "$job" "$W/sweep" || fail "$job: rerun after crash point $n failed: $(tail -3 "$W/sweep/run.log")"
      compare "$job" "$W/sweep"
    done
    echo "torture: $job: killed at $swept of its $points crash points (every ${step}th, and the first and last of each of its $(awk '{print $2}' "$W/ref/$job/points" | sort -u | wc -l) kinds), every rerun equals the uninterrupted run"
  fi
done

# ---------------------------------------------------------------- a full disk
if [[ " $TORTURE_JOBS " == *" train "* ]]; then
  disk="$W/disk"
  prepare train "$disk"
  cp -r "$W/ref/train/out/." "$disk/out/"
  rm -rf "$disk/out/checkpoints/step-00000008"  # resuming from step 6, the run must write step 8 again
  (cd "$disk/out" && find . -type f -exec sha256sum {} + | sort -k2) > "$W/before.sha"
  more=$(job_cmd train)
  used_kb=$(du -sk "$disk/out" | cut -f1)
  ckpt_kb=$(du -sk "$disk/out/checkpoints/step-00000006" | cut -f1)
  mnt="$W/tmpfs"
  mkdir -p "$mnt"
  # A private tmpfs just larger than the run folder (needs CAP_SYS_ADMIN, or user namespaces); else
  # a file-size limit (ulimit -f) makes the first large write fail instead (EFBIG).
  script="mount -t tmpfs -o size=$((used_kb + ckpt_kb / 2 + 64))k tmpfs '$mnt' && cp -r '$disk/.' '$mnt/' && cd '$mnt' \
&& { '$RAR' $more > run.log 2>&1; echo \$? > status; } ; cp run.log status '$disk/' ; \
(cd out && find . -type f -exec sha256sum {} + | sort -k2) > '$W/after.sha'"
  if unshare -m --propagation private true 2>/dev/null; then
    how="tmpfs of $((used_kb + ckpt_kb / 2 + 64)) KiB"
    unshare -m --propagation private sh -c "$script"
  elif unshare -rm --propagation private true 2>/dev/null; then
    how="tmpfs in a user namespace"
    unshare -rm --propagation private sh -c "$script"
  else
    how="ulimit -f $((ckpt_kb / 4))"
    (cd "$disk" && trap '' XFSZ && ulimit -f $((ckpt_kb / 4)) && { "$RAR" $more > run.log 2>&1; echo $? > status; }) || true
    (cd "$disk/out" && find . -type f -exec sha256sum {} + | sort -k2) > "$W/after.sha"
  fi
  [ "$(cat "$disk/status")" = 1 ] || fail "full disk ($how): exit status $(cat "$disk/status"), expected 1: $(tail -3 "$disk/run.log")"
  err=$(grep '^rar: error: ' "$disk/run.log" || true)
  [ "$(echo "$err" | wc -l)" = 1 ] && [ -n "$err" ] || fail "full disk: expected one 'rar: error:' line: $(tail -3 "$disk/run.log")"
  echo "$err" | grep -Eq 'No space left on device|File too large' || fail "full disk: error does not say why: $err"
  # every file of the previous run is still there, unchanged (metrics.jsonl and the event file are
  # cut back to the checkpoint's step on resume, so they may have changed)
  join -1 2 -2 2 -o 1.1,2.1,0 "$W/before.sha" "$W/after.sha" > "$W/joined"
  [ "$(wc -l < "$W/joined")" = "$(wc -l < "$W/before.sha")" ] || fail "full disk ($how): files of the previous run are gone"
  awk '$3 !~ /metrics.jsonl$/ && $3 !~ /tfevents/ && $3 !~ /\/\.lock$/ && $1 != $2 { print $3 }' "$W/joined" | grep . &&
    fail "full disk ($how): files changed (the lock file's pid, metrics.jsonl and the event file aside)"
  grep -q 'tmp-' "$W/after.sha" && fail "full disk ($how): temp files left behind: $(grep tmp- "$W/after.sha")"
  echo "torture: full disk ($how): '${err#rar: error: }'; previous checkpoint intact, no temp files"
fi
echo "torture: OK"
