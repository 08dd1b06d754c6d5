#!/usr/bin/env bash
# Data parallel: how close are the final weights of a 2-GPU run to a 1-GPU run with the same global
# batch, measured against how close two identical 1-GPU runs are (the GPU kernels' own run-to-run
# rounding: e.g. attention backward accumulates with atomics). rar_b, structured tokens, dropout off.
# Usage (2+ GPUs, after `make gpu` and `. scripts/gpu-env.sh`): bench/gpu_weights.sh build-gpu/rar [steps]
set -u
R=${1:-build-gpu/rar}
STEPS=${2:-30}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
D=${OUT:-/tmp/rar-weights}
mkdir -p "$D"
"$R" bench tokens --preset rar_b --structured --count 16384 --out "$D/data.rartok" > /dev/null
C="train --data $D/data.rartok --device cuda --steps $STEPS experiment.log_every=10 experiment.save_every=100000
  experiment.eval_every=100000 experiment.generate_every=100000 lr_scheduler.params.warmup_steps=10
  model.generator.dropout=0 model.generator.attn_drop=0 training.per_gpu_batch_size=64"
for p in no bf16; do
  rm -rf "$D/a-$p" "$D/b-$p" "$D/m-$p"  # fresh runs (rar train refuses a folder holding another run)
  # one GPU: 2 micro-batches of 64 accumulated; two GPUs: 64 each (the same rows and draws)
  "$R" $C training.mixed_precision=$p --out "$D/a-$p" training.gradient_accumulation_steps=2 > "$D/a-$p.log" 2>&1
  "$R" $C training.mixed_precision=$p --out "$D/b-$p" training.gradient_accumulation_steps=2 > "$D/b-$p.log" 2>&1
  torchrun --no-python --nproc-per-node 2 --master-port 29521 "$R" $C training.mixed_precision=$p --out "$D/m-$p" \
    > "$D/m-$p.log" 2>&1
  echo "== mixed_precision=$p, $STEPS steps: 1 GPU again vs 1 GPU"
  "$R" info "$D/b-$p/generator.safetensors" --compare "$D/a-$p/generator.safetensors" | tail -2
  echo "== mixed_precision=$p, $STEPS steps: 2 GPUs vs 1 GPU"
  "$R" info "$D/m-$p/generator.safetensors" --compare "$D/a-$p/generator.safetensors" | tail -2
done
