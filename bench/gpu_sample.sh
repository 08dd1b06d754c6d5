#!/usr/bin/env bash
# Generation and decoding benchmarks on the GPU machine (bench/RESULTS.md, "Sampling"): rows for bench/RESULTS.md.
# Usage: bench/gpu_sample.sh build-gpu/rar
set -u
RAR=${1:-build-gpu/rar}
row() {
  local o; o=$(timeout ${ROW_TIMEOUT:-90} "$RAR" bench sample --no-header "$@" 2>&1)
  echo "$o" | grep '^| rar' || echo "| failed (rc $?): $* | $(echo "$o" | tail -2 | tr '\n' ' ') |"
}
echo "| model | batch | cfg | precision | engine | steps | tokens images/s | end-to-end images/s | TFLOP/s | of bf16 peak | peak GiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for m in rar_b rar_xl; do
  row --preset $m --batch 128 --engine plain
  for b in 128 256 512; do row --preset $m --batch $b --engine graph; done
  row --preset $m --batch 256 --engine graph --distinct-classes 4
  for b in 256 512 1024; do row --preset $m --batch $b --engine graph --kv-cache fp8; done
  # the block variant of the decode-attention kernel (the default until the warp one was measured)
  row --preset $m --batch 256 --engine graph --attention-kernel block
  row --preset $m --batch 256 --engine graph --attention-kernel block --kv-cache fp8
done
row --preset rar_xl --batch 256 --engine graph --decode --repeats 4
row --preset rar_xl --batch 1024 --engine graph --kv-cache fp8 --decode --repeats 2
row --preset rar_b --batch 1024 --engine graph --kv-cache fp8 --decode --repeats 2
row --preset rar_xl --batch 256 --engine graph --decode --repeats 4 --channels-last
row --preset rar_b --batch 256 --engine graph --decode --repeats 4
row --preset rar_b --batch 256 --engine graph --decode --repeats 4 --channels-last
timeout 90 "$RAR" bench decode --batch 64 --precision bf16
timeout 90 "$RAR" bench decode --batch 64 --precision bf16 --channels-last --no-header
timeout 90 "$RAR" bench decode --batch 256 --precision bf16 --channels-last --no-header
# the decoder's channels-last GroupNorm kernels: where the time goes now
timeout 90 "$RAR" bench decode --batch 64 --precision bf16 --channels-last --no-header --profile 12 | tail -18
