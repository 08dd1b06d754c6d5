#!/usr/bin/env bash
# Training-step benchmarks on the GPU machine (bench/RESULTS.md, "Training"): rows for bench/RESULTS.md.
# Usage: bench/gpu_train.sh build-gpu/rar
set -u
RAR=${1:-build-gpu/rar}
row() { "$RAR" bench train --no-header "$@" 2>&1 | grep '^| rar' || echo "| failed: $* |"; }
echo "| model | batch | precision | ms/step | sequences/s | tokens/s | TFLOP/s | peak GiB |"
echo "|---|---|---|---|---|---|---|---|"
row --model rar_b --batch 64 --plain
row --model rar_b --batch 64
for n in 4 6 8; do row --model rar_b --batch 64 --checkpoint-layers $n; done
row --model rar_b --batch 256
for n in 6 8 10; do row --model rar_b --batch 256 --checkpoint-layers $n; done
row --model rar_xl --batch 64
for n in 8 12 16; do row --model rar_xl --batch 64 --checkpoint-layers $n; done
