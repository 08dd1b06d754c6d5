#!/usr/bin/env bash
# One device call's worth of checking, run on the GPU machine from the repository root (after
# scripts/gpu-pack.sh here, with .devrun carried): CUDA build, the whole test suite, then the
# sampling/decoding benchmarks (bench/gpu_sample.sh) and, with TRAIN=1, the training table
# (bench/gpu_train.sh); ATTENTION=0 skips the attention-kernel table (bench/gpu_attention.sh, run
# first), SAMPLE=0 the sampling table, QUICK=1 runs the headline rows and a profile instead
# (bench/gpu_quick.sh, ~2.5 min: build + tests + these fit in one call), MULTI=N runs
# bench/gpu_multi.sh on N GPUs.
# Logs and tables go to $OUT (the device tool's output folder).
set -u
OUT=${OUT:-/tmp/rar-gpu}
mkdir -p "$OUT"
export RAR_SHARED_DIR=$PWD/.devrun/shared RAR_DATASETS_DIR=$PWD/.devrun/datasets
t0=$(date +%s)
stamp() { echo "[$1 at $(( $(date +%s) - t0 )) s]"; }
make gpu JOBS=${JOBS:-16} > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
stamp build
. scripts/gpu-env.sh
(cd build-gpu && ctest --output-on-failure --timeout 150 -j 4 > "$OUT/ctest.log" 2>&1)
grep -E "tests passed|tests failed" "$OUT/ctest.log"; grep -E "\(Failed\)|Failure" -A3 "$OUT/ctest.log" | head -30
stamp tests
if [ "${MULTI:-0}" -gt 1 ]; then OUT=/tmp/rar-multi bench/gpu_multi.sh build-gpu/rar "$MULTI" 2>&1 | tee "$OUT/multi.md"
  (cd /tmp/rar-multi && find . -name '*.log' -o -name metrics.jsonl | tar cf "$OUT/multi-logs.tar" -T -); stamp multi; fi
if [ "${ATTENTION:-1}" = 1 ]; then bench/gpu_attention.sh build-gpu/rar 2>&1 | tee "$OUT/attention.md"; stamp attention; fi
if [ "${QUICK:-0}" = 1 ]; then bench/gpu_quick.sh build-gpu/rar "$OUT/profile.md" 2>&1 | tee "$OUT/quick.md"; stamp quick
elif [ "${SAMPLE:-1}" = 1 ]; then bench/gpu_sample.sh build-gpu/rar 2>&1 | tee "$OUT/sample.md"; stamp sample; fi
if [ "${TRAIN:-0}" = 1 ]; then bench/gpu_train.sh build-gpu/rar 2>&1 | tee "$OUT/train.md"; stamp train; fi
