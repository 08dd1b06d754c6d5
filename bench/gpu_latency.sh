#!/usr/bin/env bash
# Interactive latency (issue #22): one image with guidance (2 rows per step), 256 steps, random
# weights, graph engine — the time a user waits for one image — with cuBLAS's matrix products and
# with the skinny linear kernel (RAR_SKINNY_LINEAR=1), exact and fp8 caches; then a kernel profile
# of one rar_xl image each way (kernel time vs the wall time above: what is not kernel time is
# launch gaps and host work); the split and block attention kernels beside the warp one. ~4 minutes. From the repository root on the GPU machine.
# Usage: bench/gpu_latency.sh build-gpu/rar [profile.md]
set -u
RAR=${1:-build-gpu/rar}
PROFILE=${2:-/dev/null}
row() {  # the table row and the latency line
  timeout ${ROW_TIMEOUT:-90} "$RAR" bench sample --no-header --engine graph --repeats 5 "$@" 2>&1 |
    grep -E '^\| rar|^latency' | paste -sd ' ' || echo "| failed: $* |"
}
echo "| model | batch | cfg | precision | engine | steps | tokens images/s | end-to-end images/s | TFLOP/s | of bf16 peak | peak GiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for m in rar_xl rar_b; do
  for skinny in 0 1; do
    RAR_SKINNY_LINEAR=$skinny row --model $m --batch 1 --decode
    RAR_SKINNY_LINEAR=$skinny row --model $m --batch 1 --kv-cache fp8
    RAR_SKINNY_LINEAR=$skinny row --model $m --batch 4
    # the decode step's attention with 8 warps per row and head (split) or the block kernel (4 warps,
    # q/k norm separate), where a batch has few rows
    RAR_SKINNY_LINEAR=$skinny row --model $m --batch 1 --attention-kernel split
    RAR_SKINNY_LINEAR=$skinny row --model $m --batch 1 --attention-kernel block
  done
  RAR_SKINNY_LINEAR=1 row --model $m --batch 1 --attention-kernel split --kv-cache fp8
  RAR_SKINNY_LINEAR=1 row --model $m --batch 4 --attention-kernel split
  # programmatic dependent launch between the small-batch step's kernels
  RAR_PDL=1 RAR_SKINNY_LINEAR=1 row --model $m --batch 1 --attention-kernel split --decode
  RAR_PDL=1 RAR_SKINNY_LINEAR=1 row --model $m --batch 1 --attention-kernel split --kv-cache fp8
done
# where the split variant stops paying: batches of 16, 64 and 256 images (32-512 rows)
for b in 16 64 256; do
  row --model rar_xl --batch $b --repeats 2
  row --model rar_xl --batch $b --repeats 2 --attention-kernel split
done
: > "$PROFILE"
for v in "0 warp 0" "1 split 0" "1 split 1"; do
  set -- $v
  echo "## rar_xl, batch 1, RAR_SKINNY_LINEAR=$1, $2 attention, RAR_PDL=$3" >> "$PROFILE"
  RAR_SKINNY_LINEAR=$1 RAR_PDL=$3 timeout 90 "$RAR" bench sample --no-header --engine graph --model rar_xl --batch 1 \
    --repeats 2 --attention-kernel $2 --profile 16 >> "$PROFILE" 2>&1
done
[ "$PROFILE" = /dev/null ] || grep -E "^##|^kernel time|^latency|^\| (attention|matmul|other)" "$PROFILE"
