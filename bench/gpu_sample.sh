#!/usr/bin/env bash
# Sampling and decoding throughput on the GPU machine (random weights), as markdown table rows
# for bench/RESULTS.md. Usage: bench/gpu_sample.sh [path/to/rar]   (default build-gpu/rar)
# Same settings as ../shared/BASELINES.md: batch 128 with classifier-free guidance, 256 steps;
# "tf32" = float32 with TF32 matmuls (the reference's "fp32"), "bf16" = bf16 weights and activations.
set -euo pipefail
RAR=${1:-build-gpu/rar}
header=""
for model in rar_b rar_l rar_xl; do
  for precision in tf32 bf16; do
    "$RAR" bench sample --model "$model" --batch 128 --cfg 4 --precision "$precision" $header
    header="--no-header"
  done
done
"$RAR" bench decode --batch 128 --precision tf32
"$RAR" bench decode --batch 128 --precision bf16 --no-header
