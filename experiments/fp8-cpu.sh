#!/usr/bin/env bash
# training.fp8's quality, small, on the CPU: the products' fp8 rounding (e4m3 inputs and weights,
# e5m2 gradients, one scale per tensor) is what LibTorch's scaled matmul emulates on the CPU, the
# same operands the Hopper tensor cores multiply (their float32 sums run in another order). Protocol,
# fixed before any run:
#   data     the CPU demo's Fashion-MNIST tokens (256 codes, 8x8 grid; `make demo` first).
#   model    configs/rar/fashion-mnist-cpu.yaml (1.6M parameters, 1200 steps x 64), random orders
#            throughout (r = 1: the arm where every product sees permuted sequences), float32.
#   arms     fp32 and fp8 (training.fp8=true, current scaling), each at seeds 42 and 43: the two
#            fp32 runs give the run-to-run spread the fp8 runs are compared with. fp8delayed-s42/-s43 (not in the
#            default ARMS): fp8 with training.fp8_scaling=delayed (16 steps of history).
#   scoring  validation NLL (raster, the demo's test tokens) at the end; 2000 samples (200 per
#            class) at guidance 2 (pow-cosine power 1), seed 7, raster order; the demo's classifier:
#            accuracy and feature-FID vs fashion-mnist:test with its bootstrap sd; the four loss and
#            validation curves overlaid (rar plot).
# Every run started is reported. Resumable: finished arms leave DONE, samples and scores are kept.
#   experiments/fp8-cpu.sh [build/rar] [OUT]      (about 40 minutes on 2 cores)
set -euo pipefail
RAR=${1:-build/rar}
OUT=${2:-experiments/out/fp8-cpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO=${DEMO:-demo}
PER_CLASS=${PER_CLASS:-200}
CFG=$ROOT/configs/rar/fashion-mnist-cpu.yaml
for f in "$DEMO/train.rartok" "$DEMO/test.rartok" "$DEMO/tokenizer/tokenizer.safetensors" "$DEMO/classifier.safetensors"; do
  [ -f "$f" ] || { echo "missing $f: run make demo first" >&2; exit 1; }
done
mkdir -p "$OUT"
STEPS=$("$RAR" train --config "$CFG" --print-config | awk '/max_train_steps/ {print $2}')
ARMS=${ARMS:-"fp32-s42 fp32-s43 fp8-s42 fp8-s43"}
for arm in $ARMS; do
  seed=${arm##*-s}
  fp8=false; scaling=current
  case ${arm%%-*} in fp8) fp8=true ;; fp8delayed) fp8=true; scaling=delayed ;; esac
  if [ ! -f "$OUT/$arm/DONE" ]; then
    start=$(date +%s)
    "$RAR" train --config "$CFG" --data "$DEMO/train.rartok" --val "$DEMO/test.rartok" --out "$OUT/$arm" --device cpu \
      --resume model.generator.randomness_anneal_start=$((STEPS * 10)) model.generator.randomness_anneal_end=$((STEPS * 10)) \
      experiment.generate_every=0 training.seed="$seed" training.fp8="$fp8" training.fp8_scaling=$scaling \
      > "$OUT/$arm.train.log" 2>&1 ||
      { echo "$arm: training failed:"; tail -5 "$OUT/$arm.train.log"; exit 1; }
    echo "$arm: trained in $(( $(date +%s) - start )) s"
    touch "$OUT/$arm/DONE"
  fi
  s="$OUT/$arm/samples-g2.npz"
  [ -f "$s" ] || "$RAR" sample --generator "$OUT/$arm/generator.safetensors" \
    --tokenizer "$DEMO/tokenizer/tokenizer.safetensors" --all-classes --per-class "$PER_CLASS" --cfg 2 \
    --cfg-power 1 --seed 7 --batch 500 --out "$s" --device cpu --precision fp32 > /dev/null
  grep -q "^$arm	" "$OUT/scores.tsv" 2>/dev/null && continue
  res=$("$RAR" eval classify --classifier "$DEMO/classifier.safetensors" --samples "$s" --ref fashion-mnist:test \
    --pad 32 --device cpu --bootstrap 100 2>/dev/null)
  nll=$(grep -o '"val/nll":[0-9.]*' "$OUT/$arm/metrics.jsonl" | tail -1 | cut -d: -f2)
  printf '%s\t%s\t%s\t%s\t%s\n' "$arm" "$nll" "$(echo "$res" | awk '/^accuracy/ {print $2}')" \
    "$(echo "$res" | awk '/^feature-FID/ {print $2}')" "$(echo "$res" | awk '/^spread:/ {print $4}')" >> "$OUT/scores.tsv"
done
logs=(); for arm in $ARMS; do logs+=("$OUT/$arm/metrics.jsonl"); done
"$RAR" plot "${logs[@]}" --keys loss,val/nll --columns 2 --out "$OUT/curves.png" > /dev/null 2>&1 || true
echo "| arm | validation NLL (raster) | g = 2: class accuracy | feature-FID (bootstrap sd) |"
echo "|---|---|---|---|"
while IFS=$'\t' read -r arm nll acc fid sd; do echo "| $arm | $nll | $acc | $fid ($sd) |"; done < "$OUT/scores.tsv"
