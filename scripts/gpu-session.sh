#!/usr/bin/env bash
# One GPU session in device calls of at most 10 minutes: annealing arms (experiments/annealing-gpu.sh,
# trained, sampled and scored in one background job) beside the CUDA build and its test suite, then
# the results packed into $OUT, then the benchmarks in the background (scripts/gpu-bench-chain.sh:
# the latency table, TARGETS=1 the target rows, SANITIZE=1 compute-sanitizer). Run it again and again
# on the warm machine (from the repository root, .devrun/{debs,shared,dstest} carried, and
# .devrun/demo too when ARMS trains — or .devrun/demo.tgz in place of both, which fits beside the
# tracked files where the four unpacked exceed the device's 64 MiB) until it prints "session: done";
# each call stops by CALL_SECONDS (default 540) and says what is pending.
#   export OUT; [ARMS="random a25-50"] [CODES=256] [CUDA_TESTS_FIRST=1] CALL_SECONDS=540 [LATENCY=0] [QUICK=0]
#     [GEN=g.safetensors] [SANITIZE=1] [TARGETS=1] [ADM=1] [TRAIN=1] scripts/gpu-session.sh
# (the device tool's $OUT must be exported: only what lands there comes back)
# State lives in /tmp/session (markers) and /tmp/ann (the arms): a call never waits on a process
# list (a pattern there can match the caller's own command line), only on files.
set -u
[ -n "${OUT:-}" ] || echo "gpu-session: OUT is not exported, results stay in /tmp/rar-gpu (export OUT)" >&2
OUT=${OUT:-/tmp/rar-gpu}
ARMS=${ARMS:-}
CALL_SECONDS=${CALL_SECONDS:-540}
ST=/tmp/session ANN=/tmp/ann
mkdir -p "$OUT" "$ST" "$ANN"
t0=$(date +%s)
left() { echo $(( CALL_SECONDS - ($(date +%s) - t0) )); }
say() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
. scripts/gpu-env.sh
# .devrun/demo.tgz (scripts/gpu-pack.sh DEMO=...): the demo's files and the test split, packed to fit a carry
[ -f .devrun/demo.tgz ] && [ ! -d .devrun/demo ] && tar xzf .devrun/demo.tgz -C .devrun
export RAR_DATASETS_DIR=$PWD/.devrun/dstest RAR_SHARED_DIR=$PWD/.devrun/shared

# 1. the binary, then the arms in the background (its own session: it outlives this call);
# ARMS="" (nothing to train): the build, the suite, the latency table and the options below only
# CUDA_TESTS_FIRST=1: the whole build and the CUDA tests (*Cuda*:Fp8*) before the arms, which start
# only if those pass (code no GPU has run yet decides whether the arms' minutes are worth spending)
if [ ! -f "$ST/started" ]; then
  make gpu JOBS=16 GPU_TARGET=$([ "${CUDA_TESTS_FIRST:-0}" = 1 ] || echo rar) > "$OUT/build-rar.log" 2>&1 ||
    { tail -30 "$OUT/build-rar.log"; exit 1; }
  if [ "${CUDA_TESTS_FIRST:-0}" = 1 ] && [ -n "$(echo $ARMS)" ]; then
    (cd build-gpu && timeout 400 ./rar_tests --gtest_filter='*Cuda*:Fp8*' > "$OUT/cuda-tests.log" 2>&1)
    rc=$?
    say "CUDA tests rc $rc"; grep -E "^\[  (PASSED|FAILED)|Failure" -A3 "$OUT/cuda-tests.log" | head -30
    [ "$rc" = 0 ] || { say "arms not started: a CUDA test failed"; echo 1 > "$ST/arms-rc"; touch "$ST/packed" "$ST/started"; }
  fi
  [ -n "$(echo $ARMS)" ] || { echo 0 > "$ST/arms-rc"; touch "$ST/packed" "$ST/started"; }
fi
if [ ! -f "$ST/started" ] && [ ! -f "$ST/arms-rc" ]; then
  # the arms scored in earlier sessions (on the GPU demo's 512-code tokens) join the best-arm
  # choice for the fp8 row; another tokenizer's run (CODES=256: the CPU demo's) stands alone
  earlier=; [ "${CODES:-512}" = 512 ] && earlier=$PWD/experiments/annealing-gpu/scores.tsv
  setsid nohup bash -c "env FLOOR=0 EARLIER_SCORES='$earlier' STAGE_MINUTES=${STAGE_MINUTES:-45} PARALLEL=2 ARMS='$ARMS' \
    experiments/annealing-gpu.sh build-gpu/rar .devrun/demo $ANN > $ANN/run.log 2>&1; echo \$? > $ST/arms-rc" \
    < /dev/null > /dev/null 2>&1 &
  touch "$ST/started"
  say "arms started: $ARMS"
fi
# 2. the whole CUDA build and its suite, beside the training
if [ ! -f "$ST/suite-ran" ] && [ "$(left)" -gt 300 ]; then
  make gpu JOBS=8 > "$OUT/build.log" 2>&1 || tail -30 "$OUT/build.log"
  (cd build-gpu && timeout $(( $(left) - 30 )) ctest --output-on-failure --timeout 150 -j 4 > "$ST/ctest.log" 2>&1)
  cp "$ST/ctest.log" "$OUT/ctest.log"
  grep -q "tests passed" "$ST/ctest.log" && touch "$ST/suite"
  touch "$ST/suite-ran"  # once: a second run would share the GPU with the benchmarks
  grep -E "tests passed|\(Failed\)|Failure" -A3 "$ST/ctest.log" | head -30
fi
# 3. wait for the arms (the script ends with "done in this call" or stops early with a reason)
while [ ! -f "$ST/arms-rc" ] && [ "$(left)" -gt 20 ]; do sleep 5; done
if [ ! -f "$ST/arms-rc" ]; then
  say "arms pending: $(tail -c 300 "$ANN/run.log" | tr '\n' ' ')"
  for f in "$ANN"/*.train.log; do [ -f "$f" ] && echo "$(basename "$f"): $(tail -c 160 "$f" | tr '\r\n' '  ')"; done
  exit 0
fi
if [ ! -f "$ST/packed" ]; then
  say "arms finished (rc $(cat "$ST/arms-rc")):"; tail -20 "$ANN/run.log"
  (cd /tmp && tar czf "$OUT/ann.tgz" --exclude=checkpoints --exclude=generator.safetensors ann && cd "$OUT" &&
    split -b 15M ann.tgz ann.tgz. && rm ann.tgz)
  touch "$ST/packed"
  ls -la "$OUT"
  exit 0  # the packed results come back with this call; the latency table next call
fi
# 4. the benchmarks, in the background once the suite has run and the arms are packed (they may
# outlive a call: scripts/gpu-bench-chain.sh — latency, TARGETS=1 the target rows, SANITIZE=1
# compute-sanitizer); every call waits for them while it may and copies what they wrote so far
B=$ST/bench
if [ -f "$ST/suite-ran" ] && [ ! -f "$ST/bench-started" ]; then
  gen=; for a in $ARMS; do [ -f "$ANN/$a/generator.safetensors" ] && gen=$ANN/$a/generator.safetensors; done
  mkdir -p "$B"
  LATENCY=${LATENCY:-1} QUICK=${QUICK:-1} GEN=${GEN:-$gen} TARGETS=${TARGETS:-0} ADM=${ADM:-0} TRAIN=${TRAIN:-0} \
    SANITIZE=${SANITIZE:-0} setsid nohup scripts/gpu-bench-chain.sh build-gpu "$B" < /dev/null > "$B/chain.log" 2>&1 &
  touch "$ST/bench-started"
  say "benchmarks started (QUICK=${QUICK:-1} TARGETS=${TARGETS:-0} SANITIZE=${SANITIZE:-0})"
fi
while [ -f "$ST/bench-started" ] && [ ! -f "$B/DONE" ] && [ "$(left)" -gt 15 ]; do sleep 5; done
[ -d "$B" ] && cp "$B"/*.md "$B"/*.log "$OUT"/ 2>/dev/null
if [ -f "$B/DONE" ]; then
  cat "$B"/latency.md; for f in targets adm train sanitize; do [ -f "$B/$f.md" ] && cat "$B/$f.md"; done
  say "session: done"
else
  say "benchmarks pending (done: $(cd "$B" 2>/dev/null && ls DONE-* 2>/dev/null | tr '\n' ' ')); run again"
fi
