#!/usr/bin/env bash
# The training round's checking call on the GPU machine, as one background chain that may outlive
# a device call: the whole CUDA build, the training GPU tests (fused ops, captured step), the
# training table (bench/gpu_train.sh, QUICK=1 by default), a kernel profile of the rar_xl step,
# then the whole CUDA suite; after the build (FP8_PRODUCTS=0 skips it) bench/fp8_products.py, PyTorch's fp8
# and bf16 products at the training shapes. Run it again and again on the warm machine (from the repository root,
# .devrun/{debs,shared} carried) until it prints "train-check: done"; every call waits up to
# CALL_SECONDS (default 540) and copies what the chain has written so far into $OUT.
#   export OUT; [QUICK=0] [REPEATS=3] [SUITE=0] [FP8_PRODUCTS=0] CALL_SECONDS=540 scripts/gpu-train-check.sh
set -u
OUT=${OUT:-/tmp/rar-gpu}
CALL_SECONDS=${CALL_SECONDS:-540}
ST=/tmp/train-check
mkdir -p "$OUT" "$ST"
t0=$(date +%s)
if [ ! -f "$ST/started" ]; then
  touch "$ST/started"
  setsid nohup bash -c "
    . scripts/gpu-env.sh; export RAR_SHARED_DIR=\$PWD/.devrun/shared
    make gpu JOBS=16 > $ST/build.log 2>&1 || { echo build failed > $ST/done; exit 1; }
    [ '${FP8_PRODUCTS:-1}' = 1 ] && python3 bench/fp8_products.py rar_b rar_xl > $ST/fp8-products.md 2>&1
    build-gpu/rar_tests --gtest_filter='FusedOps*:TrainRar*:RecomputedBlocks*:SamplerCuda*' > $ST/focused.log 2>&1
    QUICK=${QUICK:-1} REPEATS=${REPEATS:-3} bench/gpu_train.sh build-gpu/rar > $ST/train.md 2>&1
    build-gpu/rar bench train --preset rar_xl --batch 64 --no-graph --profile 90 > $ST/profile-xl.md 2>&1
    build-gpu/rar bench train --preset rar_b --batch 64 --no-graph --profile 60 > $ST/profile-b.md 2>&1
    [ '${SUITE:-1}' = 1 ] && (cd build-gpu && ctest --output-on-failure --timeout 300 -j 4 > $ST/ctest.log 2>&1)
    echo ok > $ST/done" < /dev/null > /dev/null 2>&1 &
fi
while [ ! -f "$ST/done" ] && [ $(( $(date +%s) - t0 )) -lt "$CALL_SECONDS" ]; do sleep 5; done
for f in build.log fp8-products.md focused.log train.md profile-xl.md profile-b.md ctest.log; do
  [ -f "$ST/$f" ] && tail -c 15000000 "$ST/$f" > "$OUT/$f"
done
[ -f "$ST/build.log" ] && grep -E 'error|FAILED' "$ST/build.log" | head -20
[ -f "$ST/focused.log" ] && grep -E '^\[  (PASSED|FAILED) |Failure' -A3 "$ST/focused.log" | head -40
[ -f "$ST/fp8-products.md" ] && grep -E '^(all six|per step)' "$ST/fp8-products.md"
[ -f "$ST/train.md" ] && cat "$ST/train.md"
[ -f "$ST/ctest.log" ] && grep -E 'tests passed|\(Failed\)|\(Timeout\)' "$ST/ctest.log" | head -20
if [ -f "$ST/done" ]; then echo "train-check: done ($(cat "$ST/done"))"; else echo "train-check: pending"; fi
