#!/usr/bin/env bash
# Issue #8 on a machine with 2+ GPUs (device kind nvidia-h200-x2 or larger), from the repository
# root after `make gpu` and `. scripts/gpu-env.sh`: rar_b data-parallel training vs one GPU with
# the same global batch, and sharded sampling vs one process. Writes under ${OUT:-/tmp/rar-multi}.
# Usage: bench/gpu_multi.sh build-gpu/rar [gpus]
set -u
RAR=${1:-build-gpu/rar}
NG=${2:-2}
OUT=${OUT:-/tmp/rar-multi}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0  # NVLink multicast off (device README)
"$RAR" bench tokens --model rar_b --count 65536 --out "$OUT/rand.rartok"
STEPS=${STEPS:-200}
GB=${GLOBAL_BATCH:-128}
common="train --data $OUT/rand.rartok --device cuda experiment.log_every=10 experiment.save_every=100000
  experiment.eval_every=100000 experiment.generate_every=100000 lr_scheduler.params.warmup_steps=20"
# fp32 with dropout off: the two runs should agree to float rounding; then bf16 (the real setting).
for prec in fp32 bf16; do
  extra="training.mixed_precision=$([ $prec = bf16 ] && echo bf16 || echo no) --steps $([ $prec = bf16 ] && echo $STEPS || echo ${STEPS_FP32:-50})"
  [ $prec = fp32 ] && extra="$extra model.generator.dropout=0 model.generator.attn_drop=0"
  "$RAR" $common $extra --out "$OUT/one-$prec" training.per_gpu_batch_size=$GB > "$OUT/one-$prec.log" 2>&1
  torchrun --no-python --nproc-per-node "$NG" --master-port 29511 "$RAR" $common $extra --out "$OUT/multi-$prec" \
    training.per_gpu_batch_size=$((GB / NG)) > "$OUT/multi-$prec.log" 2>&1
  echo "== $prec: final weights, $NG GPUs vs 1"
  "$RAR" info "$OUT/multi-$prec/generator.safetensors" --compare "$OUT/one-$prec/generator.safetensors" | tail -4
  echo "== $prec: sequences/s of the last logged window, 1 GPU then $NG"
  grep -o '"sequences_per_s":[0-9.e+-]*' "$OUT/one-$prec/metrics.jsonl" | tail -1
  grep -o '"sequences_per_s":[0-9.e+-]*' "$OUT/multi-$prec/metrics.jsonl" | tail -1
  echo "== $prec: loss, 1 GPU | $NG GPUs (every 10 steps, last 5)"
  paste <(grep -o '"loss":[0-9.e+-]*' "$OUT/one-$prec/metrics.jsonl") \
        <(grep -o '"loss":[0-9.e+-]*' "$OUT/multi-$prec/metrics.jsonl") | tail -5
done
echo "== sharded sampling (random-weight checkpoint from the runs above, no tokenizer: tokens only)"
# ADM-layout .npz needs a tokenizer; with the shared tiny one: RAR_SHARED_DIR/reference/tiny_vq.bin
VQ=${RAR_SHARED_DIR:-.devrun/shared}/reference/tiny_vq.bin
G="$OUT/one-bf16/generator.safetensors"
args="sample --generator $G --tokenizer $VQ --classes 0,1,2,3,4,5,6,7 --per-class 8 --batch 16 --cfg 4 --seed 3 --device cuda"
"$RAR" $args --out "$OUT/one.npz" > "$OUT/sample-one.log" 2>&1
torchrun --no-python --nproc-per-node "$NG" --master-port 29512 "$RAR" $args --out "$OUT/multi.npz" > "$OUT/sample-multi.log" 2>&1
python3 -c "
import numpy as np, sys
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
same = all(np.array_equal(a[k], b[k]) for k in ('arr_0', 'arr_1'))
print('sharded sampling:', 'identical arr_0/arr_1' if same else 'DIFFERENT', a['arr_0'].shape)
" "$OUT/one.npz" "$OUT/multi.npz"
