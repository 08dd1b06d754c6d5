#!/usr/bin/env bash
# The headline sampling rows of bench/RESULTS.md and one kernel profile, ~2.5 minutes: fits in the same
# device call as a build and the test suite (scripts/gpu-check.sh QUICK=1), where the whole
# bench/gpu_sample.sh (~8 minutes) does not. From the repository root on the GPU machine.
# Usage: bench/gpu_quick.sh build-gpu/rar [profile.md]
set -u
RAR=${1:-build-gpu/rar}
PROFILE=${2:-/dev/null}
row() { timeout ${ROW_TIMEOUT:-90} "$RAR" bench sample --no-header --engine graph "$@" 2>&1 | grep '^|' ||
  echo "| failed: $* |"; }
echo "| model | batch | cfg | precision | engine | steps | tokens images/s | end-to-end images/s | TFLOP/s | of bf16 peak | peak GiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for m in rar_xl rar_b; do
  row --preset $m --batch 256
  row --preset $m --batch 256 --kv-cache fp8 --decode --repeats 3
  row --preset $m --batch 1024 --kv-cache fp8 --decode --repeats 2
done
# the decoder alone (the end-to-end rows include it)
echo; timeout 60 "$RAR" bench decode --batch 64 --precision bf16 2>&1 | grep '^|'
# where a rar_xl step's time goes (the kernels by time; matmul / attention / other totals)
timeout 90 "$RAR" bench sample --no-header --preset rar_xl --batch 256 --kv-cache fp8 --profile 14 > "$PROFILE" 2>&1
[ "$PROFILE" = /dev/null ] || tail -6 "$PROFILE"
