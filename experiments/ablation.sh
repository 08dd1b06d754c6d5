#!/usr/bin/env bash
# The paper's claim, small: the same generator and compute trained three ways on Fashion-MNIST
# tokens — raster order only (r = 0 throughout), RAR (r annealed from 1 to 0), and random orders
# only (r = 1 throughout) — each sampled in raster order at several guidance scales and scored
# with the demo's classifier (class accuracy, feature-FID against the real test set).
# Needs the demo's tokenizer, token files and classifier (run `make demo` first).
#   experiments/ablation.sh [build/rar]      (CPU, about 25 minutes on 2 cores)
#   GPU=1 OUT=... experiments/ablation.sh build-gpu/rar
set -euo pipefail
RAR=${1:-build/rar}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO=${DEMO:-demo}
OUT=${OUT:-experiments/out}
PER_CLASS=${PER_CLASS:-200}
SCALES=${SCALES:-"1.0 2.0 3.0 4.0"}
if [ -n "${GPU:-}" ]; then CFG=$ROOT/configs/rar/fashion-mnist.yaml; DEV=cuda; EXTRA="model.vq_model.codebook_size=512"
else CFG=$ROOT/configs/rar/fashion-mnist-cpu.yaml; DEV=cpu; EXTRA=""; fi
for f in "$DEMO/train.rartok" "$DEMO/test.rartok" "$DEMO/tokenizer/tokenizer.safetensors" "$DEMO/classifier.safetensors"; do
  [ -f "$f" ] || { echo "missing $f: run make demo first" >&2; exit 1; }
done
mkdir -p "$OUT"
STEPS=$("$RAR" train --config "$CFG" --print-config | awk '/max_train_steps/ {print $2}')
declare -A ANNEAL=([raster]="0 0" [rar]="$((STEPS / 4)) $((STEPS * 2 / 3))" [random]="$((STEPS * 10)) $((STEPS * 10))")
TABLE="$OUT/table.md"
echo "| training order | guidance | class accuracy | feature-FID |" > "$TABLE"
echo "|---|---|---|---|" >> "$TABLE"
for variant in raster rar random; do
  read -r start end <<< "${ANNEAL[$variant]}"
  if [ ! -f "$OUT/$variant/DONE" ]; then
    # shellcheck disable=SC2086
    "$RAR" train --config "$CFG" --data "$DEMO/train.rartok" --val "$DEMO/test.rartok" --out "$OUT/$variant" \
      --device "$DEV" --resume model.generator.randomness_anneal_start="$start" \
      model.generator.randomness_anneal_end="$end" experiment.generate_every=0 $EXTRA
    touch "$OUT/$variant/DONE"
  fi
  for g in $SCALES; do
    s="$OUT/$variant/samples-g$g.npz"
    [ -f "$s" ] || "$RAR" sample --generator "$OUT/$variant/generator.safetensors" \
      --tokenizer "$DEMO/tokenizer/tokenizer.safetensors" --all-classes --per-class "$PER_CLASS" --cfg "$g" \
      --cfg-power 1 --seed 7 --batch 500 --out "$s" --device "$DEV" --precision fp32
    res=$("$RAR" eval classify --classifier "$DEMO/classifier.safetensors" --samples "$s" --ref fashion-mnist:test \
      --pad 32 --device "$DEV" 2>/dev/null)
    acc=$(echo "$res" | awk '/^accuracy/ {print $2}')
    fid=$(echo "$res" | awk '/^feature-FID/ {print $2}')
    echo "| $variant (anneal $start-$end) | $g | $acc | $fid |" | tee -a "$TABLE"
  done
done
echo; cat "$TABLE"
