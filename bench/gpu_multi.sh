#!/usr/bin/env bash
# Data parallel on a machine with 2+ GPUs (device kind nvidia-h200-x2 or larger), from the repository
# root after `make gpu` and `. scripts/gpu-env.sh`: rar_b data-parallel training vs one GPU with
# the same global batch, throughput scaling at 64 sequences per GPU (rar_b and rar_xl, bf16 and fp8;
# SCALE_PRESETS, SCALE_FP8=0), and sharded sampling vs one process. Writes under ${OUT:-/tmp/rar-multi}.
# Usage: bench/gpu_multi.sh build-gpu/rar [gpus]
set -u
RAR=${1:-build-gpu/rar}
NG=${2:-2}
OUT=${OUT:-/tmp/rar-multi}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # NVLink multicast off (device README)
echo "== how the GPUs are linked"
nvidia-smi topo -m 2>&1 | head -$((NG + 2))
# Learnable data (per-class templates): the gradients carry signal, so the weights of two runs can be
# compared (on random tokens Adam's steps are mostly noise-driven and any rounding difference shows).
"$RAR" bench tokens --preset rar_b --count 65536 --structured --out "$OUT/data.rartok"
common="train --data $OUT/data.rartok --device cuda experiment.log_every=10 experiment.save_every=100000
  experiment.eval_every=100000 experiment.generate_every=100000 lr_scheduler.params.warmup_steps=20"
# seqs METRICS N: mean sequences/s of a run's last N logged windows; efficiency ONE MULTI: MULTI / (NG x ONE)
seqs() { grep -o '"sequences_per_s":[0-9.e+-]*' "$1" | tail -"$2" | cut -d: -f2 | awk '{s+=$1} END {if (NR) print s/NR; else print "n/a"}'; }
efficiency() { awk -v a="$1" -v b="$2" -v n="$NG" 'BEGIN {printf "%.1f%%", 100 * b / (n * a)}'; }
# pair NAME STEPS GLOBAL_BATCH MICRO_BATCH "settings" ["settings of the multi-GPU run only"]
# One GPU runs GLOBAL/MICRO accumulation steps; NG GPUs run GLOBAL/(NG*MICRO) each.
pair() {
  local name=$1 steps=$2 gb=$3 mb=$4 extra=$5 mextra=${6:-}
  rm -rf "$OUT/one-$name" "$OUT/multi-$name"  # fresh runs (rar train refuses a folder holding another run)
  "$RAR" $common $extra --steps $steps --out "$OUT/one-$name" training.per_gpu_batch_size=$mb \
    training.gradient_accumulation_steps=$((gb / mb)) > "$OUT/one-$name.log" 2>&1 || tail -5 "$OUT/one-$name.log"
  NCCL_DEBUG=${NCCL_DEBUG:-} torchrun --no-python --nproc-per-node "$NG" --master-port 29511 "$RAR" $common $extra $mextra \
    --steps $steps --out "$OUT/multi-$name" training.per_gpu_batch_size=$mb \
    training.gradient_accumulation_steps=$((gb / mb / NG)) > "$OUT/multi-$name.log" 2>&1 || tail -5 "$OUT/multi-$name.log"
  echo "== $name ($steps steps, global batch $gb, micro-batch $mb): final weights, $NG GPUs vs 1 (max |a-b| / max |b|)"
  "$RAR" info "$OUT/multi-$name/generator.safetensors" --compare "$OUT/one-$name/generator.safetensors" | sed -n '2,5p;$p'
  echo "   without k_norm.bias (its gradient is zero up to rounding: softmax ignores a shift shared by all keys):"
  "$RAR" info "$OUT/multi-$name/generator.safetensors" --compare "$OUT/one-$name/generator.safetensors" |
    grep -v -e k_norm.bias -e '^tensor' -e '^worst' | head -2
  local s1 sn
  s1=$(seqs "$OUT/one-$name/metrics.jsonl" 5); sn=$(seqs "$OUT/multi-$name/metrics.jsonl" 5)
  echo "   sequences/s (mean of the last 5 logged windows): 1 GPU $s1, $NG GPUs $sn; scaling efficiency $(efficiency "$s1" "$sn")"
  echo "   loss every 10 steps, 1 GPU | $NG GPUs (first 2, last 3):"
  paste <(grep -o '"loss":[0-9.e+-]*' "$OUT/one-$name/metrics.jsonl") \
        <(grep -o '"loss":[0-9.e+-]*' "$OUT/multi-$name/metrics.jsonl") | sed -n '1,2p' 
  paste <(grep -o '"loss":[0-9.e+-]*' "$OUT/one-$name/metrics.jsonl") \
        <(grep -o '"loss":[0-9.e+-]*' "$OUT/multi-$name/metrics.jsonl") | tail -3
}
# fp32 with dropout off: the two runs should agree to float rounding; then bf16 (the real setting).
pair fp32 ${STEPS_FP32:-50} 128 64 "training.mixed_precision=no model.generator.dropout=0 model.generator.attn_drop=0"
NCCL_DEBUG=INFO pair bf16 ${STEPS:-200} 128 64 "training.mixed_precision=bf16"
grep -h -o -E "NCCL INFO Channel 00.*via [A-Za-z/0-9]+" "$OUT/multi-bf16.log" | head -2
pair bf16-grads ${STEPS_GRADS:-100} 128 64 "training.mixed_precision=bf16" "training.ddp_grad_dtype=bf16"
pair bf16-b256 ${STEPS_256:-100} 256 128 "training.mixed_precision=bf16"
# training.fp8, current scaling: each micro-batch casts with its own scales, so N GPUs equal one GPU accumulating
pair fp8-current ${STEPS_FP8:-100} 128 64 "training.mixed_precision=bf16 training.fp8=true training.fp8_scaling=current"
# delayed scaling (the default): the ranks take the max of their records each step, as one GPU does over its micro-batches
pair fp8-delayed ${STEPS_FP8:-100} 128 64 "training.mixed_precision=bf16 training.fp8=true"
grep -l -E "NCCL error|unhandled system error" "$OUT"/*.log && echo "NCCL errors: see the logs above" || echo "no NCCL errors in the logs"

# scale NAME PRESET "settings": sequences/s at 64 sequences per GPU (no accumulation) — one GPU with
# its captured step, one GPU eager (a data-parallel step is not captured), NG GPUs — and how many
# gradient buckets were all-reduced while backward was still running.
scale() {
  local name=$1 preset=$2 extra=$3 steps=${STEPS_SCALE:-60} data="$OUT/data-$2.rartok"
  [ -f "$data" ] || "$RAR" bench tokens --preset "$preset" --count 16384 --structured --out "$data" > /dev/null
  local c="train --data $data --preset $preset --device cuda experiment.log_every=10 experiment.save_every=100000
    experiment.eval_every=100000 experiment.generate_every=100000 training.per_gpu_batch_size=64
    training.gradient_accumulation_steps=1 training.mixed_precision=bf16 --steps $steps $extra"
  rm -rf "$OUT"/scale-"$name"-*
  "$RAR" $c --out "$OUT/scale-$name-graph" > "$OUT/scale-$name-graph.log" 2>&1 || tail -3 "$OUT/scale-$name-graph.log"
  "$RAR" $c training.cuda_graph=false --out "$OUT/scale-$name-eager" > "$OUT/scale-$name-eager.log" 2>&1 ||
    tail -3 "$OUT/scale-$name-eager.log"
  torchrun --no-python --nproc-per-node "$NG" --master-port 29514 "$RAR" $c --out "$OUT/scale-$name-multi" \
    > "$OUT/scale-$name-multi.log" 2>&1 || tail -3 "$OUT/scale-$name-multi.log"
  local g e m
  g=$(seqs "$OUT/scale-$name-graph/metrics.jsonl" 3); e=$(seqs "$OUT/scale-$name-eager/metrics.jsonl" 3)
  m=$(seqs "$OUT/scale-$name-multi/metrics.jsonl" 3)
  echo "| $name | $g | $e | $m | $(efficiency "$g" "$m") | $(efficiency "$e" "$m") |" \
    "$(grep -o 'gradient buckets: .*' "$OUT/scale-$name-multi.log" | head -1) |"
}
echo "== scaling at 64 sequences per GPU (sequences/s, mean of the last 3 logged windows)"
echo "| run | 1 GPU captured | 1 GPU eager | $NG GPUs | efficiency vs captured | vs eager | overlap |"
echo "|---|---|---|---|---|---|---|"
for preset in ${SCALE_PRESETS:-rar_b rar_xl}; do
  scale "$preset" "$preset" ""
  [ "${SCALE_FP8:-1}" = 1 ] && scale "$preset-fp8" "$preset" "training.fp8=true"
done

echo "== sharded sampling (a checkpoint from the runs above; the shared tiny tokenizer decodes)"
VQ=${RAR_SHARED_DIR:-.devrun/shared}/reference/tiny_vq.bin
G="$OUT/one-bf16/generator.safetensors"
args="sample --generator $G --tokenizer $VQ --classes 0,1,2,3,4,5,6,7 --per-class 8 --batch 16 --cfg 4 --seed 3 --device cuda"
"$RAR" $args --out "$OUT/one.npz" > "$OUT/sample-one.log" 2>&1
torchrun --no-python --nproc-per-node "$NG" --master-port 29512 "$RAR" $args --out "$OUT/multi.npz" > "$OUT/sample-multi.log" 2>&1
# the same through plain environment variables (no torchrun), one process per GPU
for r in $(seq 0 $((NG - 1))); do
  RANK=$r WORLD_SIZE=$NG LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=29513 "$RAR" $args --out "$OUT/env.npz" \
    > "$OUT/sample-env-$r.log" 2>&1 &
done
wait
tail -n 1 "$OUT/sample-multi.log" "$OUT/sample-env-0.log"
python3 -c "
import numpy as np, sys
a = np.load(sys.argv[1])
for f in sys.argv[2:]:
    b = np.load(f)
    same = all(np.array_equal(a[k], b[k]) for k in ('arr_0', 'arr_1'))
    print('sharded sampling', f, ':', 'identical arr_0/arr_1' if same else 'DIFFERENT', b['arr_0'].shape)
" "$OUT/one.npz" "$OUT/multi.npz" "$OUT/env.npz"
