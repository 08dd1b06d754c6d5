#!/usr/bin/env bash
# The decode-attention kernels alone (bench/RESULTS.md, "Sampling"), from the repository root on the GPU machine:
# rar_xl and rar_b, guided batch 256, bf16 and fp8 caches, both kernels, cache filled to 64 / 128 /
# 256 of 257 slots. ~1-2 minutes. Usage: bench/gpu_attention.sh build-gpu/rar
set -u
RAR=${1:-build-gpu/rar}
first=1
for m in rar_xl rar_b; do for kv in model fp8; do for kern in block warp; do for f in 64 128 256; do
  timeout 60 "$RAR" bench attention --preset $m --batch 256 --kv-cache $kv --attention-kernel $kern --fill $f \
    $([ $first = 1 ] || echo --no-header) 2>&1 | grep '^|'
  first=0
done; done; done; done
