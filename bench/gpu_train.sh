#!/usr/bin/env bash
# Training-step benchmarks on the GPU machine (bench/RESULTS.md, "Training"): rows for bench/RESULTS.md,
# each row REPEATS separate processes (default 3; the spread is what the table states).
# Usage: [REPEATS=3] [QUICK=1] bench/gpu_train.sh build-gpu/rar
#   QUICK=1: the training round's rows only (batch 64: rar_b, rar_xl, rar_xl with 12/32 recomputed, and the
#   eager step beside each captured one; rar_xl recomputing fc1's output, alone and with 4 or 6 blocks recomputed;
#   the fp8 rows of rar_b and rar_xl); QUICK=targets: the training round's target rows alone (rar_b, rar_xl,
#   rar_xl at <= 34 GiB by its fastest measured route, rar_xl in fp8 with delayed and current scaling)
set -u
RAR=${1:-build-gpu/rar}
REPEATS=${REPEATS:-3}
row() {
  for i in $(seq "$REPEATS"); do
    timeout ${ROW_TIMEOUT:-120} "$RAR" bench train --no-header "$@" 2>&1 | grep '^| rar' || echo "| failed: $* |"
  done
}
echo "| model | batch | precision | ms/step | sequences/s | tokens/s | TFLOP/s | peak GiB |"
echo "|---|---|---|---|---|---|---|---|"
if [ "${QUICK:-0}" = targets ]; then
  row --preset rar_b --batch 64
  row --preset rar_xl --batch 64
  row --preset rar_xl --batch 64 --recompute-mlp --checkpoint-layers 6
  row --preset rar_xl --batch 64 --fp8 --fp8-scaling current
  row --preset rar_xl --batch 64 --fp8
  exit 0
fi
row --preset rar_b --batch 64
row --preset rar_b --batch 64 --no-graph
row --preset rar_xl --batch 64
row --preset rar_xl --batch 64 --no-graph
row --preset rar_xl --batch 64 --checkpoint-layers 12
# the 34-GiB row's other route: fc1's output recomputed in every block (capturable), alone and with
# fewer recomputed blocks
row --preset rar_xl --batch 64 --recompute-mlp
for n in 4 6; do row --preset rar_xl --batch 64 --recompute-mlp --checkpoint-layers $n; done
# training.fp8: the blocks' products in fp8, delayed scaling (the default: no max-|x| pass before
# each cast) and current scaling
row --preset rar_b --batch 64 --fp8
row --preset rar_xl --batch 64 --fp8
row --preset rar_b --batch 64 --fp8 --fp8-scaling current
row --preset rar_xl --batch 64 --fp8 --fp8-scaling current
[ "${QUICK:-0}" = 1 ] && exit 0
row --preset rar_b --batch 64 --plain --no-graph
for n in 4 8; do row --preset rar_b --batch 64 --checkpoint-layers $n; done
row --preset rar_b --batch 256
row --preset rar_b --batch 256 --checkpoint-layers 8
for n in 8 16; do row --preset rar_xl --batch 64 --checkpoint-layers $n; done
