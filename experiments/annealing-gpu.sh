#!/usr/bin/env bash
# The paper's headline ablation at a real training length, on one GPU. Protocol, fixed
# before any run:
#   data       Fashion-MNIST tokens from the GPU demo's tokenizer (512 codes, 8x8 grid): the whole
#              60k training set; the 10k test set for validation NLL (raster order).
#   model      configs/rar/fashion-mnist.yaml (H=384, L=8, 8 heads; batch 256, lr 1e-3, warmup 200,
#              cosine to 1e-5, seed 42), the same for every arm.
#   length     EPOCHS (default 100) epochs = EPOCHS·60000/256 steps, the same for every arm.
#   arms       raster  r = 0 throughout              (anneal 0 → 0)
#              random  r = 1 throughout              (anneal start = end = 10·steps)
#              a50-75  r from 1 to 0 over 50%-75%    (the paper's epochs 200-300 of 400)
#              a25-50  r from 1 to 0 over 25%-50%    (another row of the paper's table)
#              random-fp8  as random, with training.fp8 and its default (delayed) scaling: the fp8
#                      products' quality beside the bf16 random arm, same steps and seed; not in the
#                      default ARMS: ARMS="random random-fp8"
#              random-fp8-current  the same with training.fp8_scaling=current
#              ARM-sN  any arm above with training seed N in place of 42 (e.g. random-s43 random-fp8-s43:
#                      a second training seed, how far two trainings of one arm lie apart)
#   scoring    val NLL (raster, the whole test set) at the end; 10,000 samples (1000 per class) at
#              guidance 1, 2 and 3 (pow-cosine power 1), seed 7, raster order, exact KV cache;
#              the demo's classifier: accuracy and feature-FID vs fashion-mnist:test, beside the
#              real-data floor (10,000 training images vs the test set); a 10x10 sample grid.
#   fp8 cache  on the best arm: the guidance-2 samples again with --kv-cache fp8 (same seeds),
#              scored the same way, and the share of tokens identical to the exact cache's.
# Every run started is reported; nothing is dropped.
#
# A device call lasts at most 10 minutes, so the script is resumable at every stage: training runs
# with a time budget (--minutes, checkpointed; --resume continues), samples are resumable .npz
# shards, finished stages leave DONE files. Run it again and again on a warm machine (files stay
# between calls of one session) until it prints the table:
#   STAGE_MINUTES=9 PARALLEL=2 experiments/annealing-gpu.sh build-gpu/rar DEMO_DIR OUT_DIR
# DEMO_DIR holds the GPU demo's tokenizer/tokenizer.safetensors, train.rartok, test.rartok and
# classifier.safetensors (`make demo GPU=1`; small enough to carry: ~10 MB). PARALLEL arms train
# at once (one H200, fashion-mnist.yaml: 29.9 steps/s alone, 4 x 12.7 together). A checkpoint
# (~230 MB) cannot leave the machine, so an arm must finish within one session's machine.
# Another tokenizer's tokens (e.g. the CPU demo's, CODES=256) suit a paired comparison run in one
# session (random against random-fp8), not the recorded arms.
# Dry run on the CPU: DEVICE=cpu EPOCHS=1 N_TRAIN=2560 PER_CLASS=5 EVAL_EXAMPLES=256 experiments/annealing-gpu.sh build/rar demo /tmp/a
set -euo pipefail
RAR=${1:-build-gpu/rar}
DEMO=${2:-demo}
OUT=${3:-experiments/out/annealing-gpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EPOCHS=${EPOCHS:-100}
STAGE_MINUTES=${STAGE_MINUTES:-9}
PARALLEL=${PARALLEL:-2}
DEVICE=${DEVICE:-cuda}
PER_CLASS=${PER_CLASS:-1000}
ARMS=${ARMS:-"raster random a50-75 a25-50"}
CODES=${CODES:-512}  # the tokenizer's codebook: 512 for the GPU demo's, 256 for the CPU demo's
CFG=$ROOT/configs/rar/fashion-mnist.yaml
T0=$(date +%s)
DEADLINE=$((T0 + 60 * STAGE_MINUTES))
left() { echo $(( (DEADLINE - $(date +%s)) / 60 )); }
for f in tokenizer/tokenizer.safetensors train.rartok test.rartok classifier.safetensors; do
  [ -f "$DEMO/$f" ] || { echo "missing $DEMO/$f (make demo GPU=1)" >&2; exit 1; }
done
mkdir -p "$OUT"
N=${N_TRAIN:-60000}  # Fashion-MNIST's training split, one sequence per image
STEPS=$(( EPOCHS * N / 256 ))
base() { echo "${1%-s[0-9]*}"; }  # the arm without its seed suffix
seed_of() { case $1 in *-s[0-9]*) echo "${1##*-s}" ;; *) echo 42 ;; esac; }
anneal() {
  case $(base "$1") in
    raster) echo "0 0" ;;
    random | random-fp8 | random-fp8-current) echo "$((STEPS * 10)) $((STEPS * 10))" ;;
    a50-75) echo "$((STEPS / 2)) $((STEPS * 3 / 4))" ;;
    a25-50) echo "$((STEPS / 4)) $((STEPS / 2))" ;;
  esac
}
echo "annealing-gpu: $EPOCHS epochs = $STEPS steps of 256; arms: $ARMS ($PARALLEL at once); this call until $(date -d @$DEADLINE +%T)"

# ---- training (time-sliced, PARALLEL arms at once)
train_arm() {  # train_arm ARM MINUTES: trains until done or out of minutes
  local arm=$1 start end
  read -r start end <<< "$(anneal "$arm")"
  "$RAR" train --config "$CFG" --data "$DEMO/train.rartok" --val "$DEMO/test.rartok" --out "$OUT/$arm" --device "$DEVICE" \
    --steps "$STEPS" --minutes "$2" --resume model.generator.randomness_anneal_start="$start" \
    model.generator.randomness_anneal_end="$end" model.vq_model.codebook_size=$CODES experiment.generate_every=0 experiment.eval_every=$(( (STEPS + 9) / 10 )) \
    experiment.save_every=$(( (STEPS + 19) / 20 )) experiment.eval_examples=${EVAL_EXAMPLES:-0} \
    training.seed="$(seed_of "$arm")" \
    $(case $(base "$arm") in random-fp8) echo training.fp8=true ;; random-fp8-current) echo training.fp8=true training.fp8_scaling=current ;; esac) \
    >> "$OUT/$arm.train.log" 2>&1 || {
    echo "$arm: training failed:"; tail -5 "$OUT/$arm.train.log"; return 1; }
  if grep -q "finished at step $STEPS" "$OUT/$arm.train.log"; then touch "$OUT/$arm/DONE"; fi
}
for pass in 1 2 3 4 5 6 7 8; do
  pending=()
  for arm in $ARMS; do [ -f "$OUT/$arm/DONE" ] || pending+=("$arm"); done
  [ ${#pending[@]} -gt 0 ] || break
  m=$(left); [ "$m" -ge 1 ] || { echo "out of time for this call (pending: ${pending[*]}): run again"; exit 0; }
  now=("${pending[@]:0:$PARALLEL}")
  echo "training ${now[*]} for up to $m min"
  pids=()
  for arm in "${now[@]}"; do train_arm "$arm" "$m" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || exit 1; done
  for arm in "${now[@]}"; do
    [ -f "$OUT/$arm/DONE" ] || { echo "$arm: at $(grep -o 'step [0-9]*' "$OUT/$arm.train.log" | tail -1); continues next call"; exit 0; }
  done
done

# TRAIN_ONLY=1: stop here (e.g. to check a new build's sampling before the samples are drawn)
[ "${TRAIN_ONLY:-0}" = 1 ] && { echo "training done (TRAIN_ONLY=1): run again without it to sample and score"; exit 0; }

# ---- samples and scores
T=$DEMO/tokenizer/tokenizer.safetensors
C=$DEMO/classifier.safetensors
score() {  # score NAME SAMPLES -> a line in $OUT/scores.tsv: name, accuracy, feature-FID, its bootstrap sd, accuracy sd
  grep -q "^$1	" "$OUT/scores.tsv" 2>/dev/null && return
  res=$("$RAR" eval classify --classifier "$C" --samples "$2" --ref fashion-mnist:test --pad 32 --device "$DEVICE" \
    --bootstrap 100 ${3:+--max-images $3} 2>/dev/null)
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$(echo "$res" | awk '/^accuracy/ {print $2}')" \
    "$(echo "$res" | awk '/^feature-FID/ {print $2}')" "$(echo "$res" | awk '/^spread:/ {print $4}')" \
    "$(echo "$res" | awk '/^spread:/ {print $(NF-1)}')" >> "$OUT/scores.tsv"
}
[ "$(left)" -ge 1 ] || { echo "out of time for this call: run again"; exit 0; }
[ "${FLOOR:-1}" = 0 ] || score floor fashion-mnist:train $((PER_CLASS * 10))  # FLOOR=0: scored elsewhere (the training images need not travel)
scored() { grep -q "^$1	" "$OUT/scores.tsv" 2>/dev/null; }
sample_scored() {  # sample_scored NAME ARM SEED EXTRA-OPTIONS...: 10,000 samples at guidance 2 (g for g1/g3 names), scored
  local name=$1 arm=$2 seed=$3 tag; shift 3
  scored "$name" && return
  [ -f "$OUT/$arm/generator.safetensors" ] || { echo "$name: not scored (its generator is not here)"; return 0; }
  tag=${name#"$arm "}; tag=${tag// /-}
  [ -f "$OUT/$arm/samples-$tag.npz" ] || "$RAR" sample --generator "$OUT/$arm/generator.safetensors" --tokenizer "$T" \
    --all-classes --per-class "$PER_CLASS" --cfg-power 1 --seed "$seed" --batch 1000 --tokens-out "$OUT/$arm/tokens-$tag.npy" \
    --out "$OUT/$arm/samples-$tag.npz" --compress --device "$DEVICE" --precision fp32 "$@" > /dev/null
  score "$name" "$OUT/$arm/samples-$tag.npz"
}
for arm in $ARMS; do
  [ -f "$OUT/$arm/grid.png" ] || "$RAR" sample --generator "$OUT/$arm/generator.safetensors" --tokenizer "$T" --all-classes \
    --per-class 10 --cfg 2 --cfg-power 1 --seed 7 --out "$OUT/$arm/grid.png" --device "$DEVICE" --precision fp32 \
    --class-names "$DEMO/train.rartok.classes.txt" > /dev/null
  # curves need a build with cairo (the GPU machine's has none: they are drawn afterwards, here)
  [ -f "$OUT/$arm/curves.png" ] || "$RAR" plot "$OUT/$arm/metrics.jsonl" --out "$OUT/$arm/curves.png" > /dev/null 2>&1 || true
  for g in 1 2 3; do
    [ "$(left)" -ge 1 ] || { echo "out of time for this call: run again"; exit 0; }
    sample_scored "$arm g$g" "$arm" 7 --cfg $g
  done
  # the same guidance-2 run with another seed: how far two draws of one model lie apart
  sample_scored "$arm g2 seed8" "$arm" 8 --cfg 2
done

# ---- memorisation: each arm's guidance-2 samples against their nearest training images (pixel L2),
# beside the test images' (needs the training images: skipped with FLOOR=0, run where they are)
if [ "${FLOOR:-1}" != 0 ]; then
  for arm in $ARMS; do
    grep -q "^$arm	" "$OUT/copies.tsv" 2>/dev/null || [ ! -f "$OUT/$arm/samples-g2.npz" ] && continue
    line=$("$RAR" eval classify --classifier "$C" --samples "$OUT/$arm/samples-g2.npz" --ref fashion-mnist:test \
      --train fashion-mnist:train --pad 32 --device "$DEVICE" 2>/dev/null | grep '^nearest training image')
    # "... median A for samples, B for reference images; C% of samples nearer ..."
    printf '%s\t%s\n' "$arm" "$(echo "$line" | sed -E 's/.*median ([0-9.]+) for samples, ([0-9.]+) for reference images; ([0-9.]+%).*/\1\t\2\t\3/')" \
      >> "$OUT/copies.tsv"
  done
fi

# ---- the fp8 KV cache on the best arm (lowest feature-FID at guidance 2): same seeds, same scoring.
# EARLIER_SCORES (a scores.tsv of arms trained in an earlier session on the same tokens) joins the
# choice only: this run's arms are always scored here, never taken from it.
best=$(cat "$OUT/scores.tsv" ${EARLIER_SCORES:+"$EARLIER_SCORES"} |
  awk -F'\t' '$1 ~ / g2$/ {sub(/ g2$/, "", $1); print $3, $1}' | sort -g | head -1 | cut -d' ' -f2)
[ -f "$OUT/$best/generator.safetensors" ] || scored "$best g2 fp8" || echo "best arm $best was trained elsewhere: its fp8 row must come from there"
[ -f "$OUT/$best/generator.safetensors" ] && sample_scored "$best g2 fp8" "$best" 7 --cfg 2 --kv-cache fp8
same=$(python3 "$ROOT/experiments/same_tokens.py" "$OUT/$best/tokens-g2.npy" "$OUT/$best/tokens-g2-fp8.npy" 2>&1 || true)
seeds=$(python3 "$ROOT/experiments/same_tokens.py" "$OUT/$best/tokens-g2.npy" "$OUT/$best/tokens-g2-seed8.npy" 2>&1 || true)

# ---- the arms' curves side by side (needs cairo: drawn here afterwards where the GPU build has none)
logs=(); for arm in $ARMS; do logs+=("$OUT/$arm/metrics.jsonl"); done
"$RAR" plot "${logs[@]}" --keys val/nll,loss,randomness --columns 3 --out "$OUT/compare-curves.png" > /dev/null 2>&1 || true

# ---- the table
{
  echo "| training order | validation NLL (raster) | g = 1 | g = 2 | g = 3 | g = 2, seed 8 | g = 2: nearest training image, median (test images') / samples nearer than 99% of test images |"
  echo "|---|---|---|---|---|---|---|"
  for arm in $ARMS; do
    nll=$(grep -o '"val/nll":[0-9.]*' "$OUT/$arm/metrics.jsonl" | tail -1 | cut -d: -f2)
    row="| $arm | $(printf '%.4f' "$nll")"
    for g in g1 g2 g3 "g2 seed8"; do
      row="$row | $(awk -F'\t' -v k="$arm $g" '$1 == k {printf "%s / %.3f", $2, $3}' "$OUT/scores.tsv")"
    done
    row="$row | $(touch "$OUT/copies.tsv"; awk -F'\t' -v k="$arm" '$1 == k {printf "%.3f (%.3f) / %s", $2, $3, $4}' "$OUT/copies.tsv")"
    echo "$row |"
  done
  echo "| real training images (floor) | | $(awk -F'\t' '$1 == "floor" {printf "%s / %.3f", $2, $3}' "$OUT/scores.tsv") | | | | |"
  echo
  echo "fp8 KV cache on $best, guidance 2: $(awk -F'\t' -v k="$best g2 fp8" '$1 == k {printf "%s / %.3f", $2, $3}' "$OUT/scores.tsv")" \
    "(exact cache: $(awk -F'\t' -v k="$best g2" '$1 == k {printf "%s / %.3f", $2, $3}' "$OUT/scores.tsv")); tokens identical: $same;" \
    "exact cache, seed 8 vs seed 7: $seeds"
} > "$OUT/table.md"
cat "$OUT/table.md"
echo "done in this call after $(( $(date +%s) - T0 )) s"
