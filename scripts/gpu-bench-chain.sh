#!/usr/bin/env bash
# The benchmarks of one GPU session, one after another, in the background (scripts/gpu-session.sh
# starts it once and every device call copies what it has written so far): the latency table
# (bench/gpu_latency.sh), then with TARGETS=1 the sampling targets' rows with their spread and profiles
# (bench/gpu_targets.sh), with ADM=1 rar eval adm end to end on 50,000 + 10,000 images
# (bench/gpu_adm.sh), with TRAIN=1 the training rows (bench/gpu_train.sh, QUICK or TRAIN_QUICK=targets, TRAIN_REPEATS
# processes a row, default 3),
# then with SANITIZE=1 the CUDA kernels' tests under compute-sanitizer
# (memcheck: out-of-bounds and misaligned accesses; racecheck: shared-memory races). Each part
# leaves DONE-<part> in DIR; the chain ends with DONE. Runs longer than a device call may.
# Usage: [LATENCY=0] [QUICK=1] [GEN=g.safetensors] [TARGETS=1] [ADM=1] [TRAIN=1] [SANITIZE=1] scripts/gpu-bench-chain.sh build-gpu DIR
# (LATENCY=0: without the latency table, e.g. to run only the sanitizer)
set -u
BUILD=${1:-build-gpu}
DIR=${2:-/tmp/session/bench}
mkdir -p "$DIR"
if [ "${LATENCY:-1}" = 1 ]; then
  QUICK=${QUICK:-1} GEN=${GEN:-} ROW_TIMEOUT=90 bench/gpu_latency.sh "$BUILD/rar" "$DIR/profile.md" > "$DIR/latency.md" 2>&1
  touch "$DIR/DONE-latency"
fi
if [ "${TARGETS:-0}" = 1 ]; then
  RAW=$DIR/targets-raw.md PROFILE=$DIR/targets-profile.md bench/gpu_targets.sh "$BUILD/rar" > "$DIR/targets.md" 2>&1
  touch "$DIR/DONE-targets"
fi
if [ "${ADM:-0}" = 1 ]; then
  DIR=/tmp/adm bench/gpu_adm.sh "$BUILD/rar" > "$DIR/adm.md" 2>&1
  touch "$DIR/DONE-adm"
fi
if [ "${TRAIN:-0}" = 1 ]; then
  REPEATS=${TRAIN_REPEATS:-3} QUICK=${TRAIN_QUICK:-1} bench/gpu_train.sh "$BUILD/rar" > "$DIR/train.md" 2>&1
  touch "$DIR/DONE-train"
fi
if [ "${SANITIZE:-0}" = 1 ]; then
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ -z "$cs" ]; then
    echo "no compute-sanitizer on this machine" > "$DIR/sanitize.md"
  else
    # our kernels' tests under memcheck and racecheck (shared memory) first, then the graph engine's
    # tests under memcheck (minutes under it: last, so a short session still gets the kernels')
    # (racecheck takes the fp8 cast kernels' own tests only: the other Fp8Cuda tests run cuBLAS's and
    # cuDNN's kernels, whose barrier-synchronised shared memory racecheck reports as races)
    for run in memcheck:kernels racecheck:kernels memcheck:graph; do
      tool=${run%%:*} filter='FusedOpsCuda.*:LogitsChainCuda.*:Fp8Cuda.*' log=$DIR/sanitize.log
      [ "$tool" = racecheck ] && filter='FusedOpsCuda.*:LogitsChainCuda.*:Fp8Cuda.CastKernels*:Fp8Cuda.DelayedCast*'
      [ "${run#*:}" = graph ] && filter='SamplerCuda.*'
      echo "## compute-sanitizer --tool $tool, $filter" >> "$log"  # one file for all three: a
      from=$(wc -l < "$log")                                       # device call brings back 8 files
      timeout 900 "$cs" --tool $tool --error-exitcode 9 "$BUILD/rar_tests" --gtest_filter="$filter" >> "$log" 2>&1
      rc=$?
      n=$(tail -n +$((from + 1)) "$log" | grep -cE '^=========.*(Invalid|Race|hazard)')
      echo "compute-sanitizer $tool on $filter: exit $rc ($n findings)" >> "$DIR/sanitize.md"
    done
  fi
  touch "$DIR/DONE-sanitize"
fi
touch "$DIR/DONE"
