#!/usr/bin/env bash
# The main job: RAR on Fashion-MNIST end to end (Debian's dataset-fashion-mnist), from images to
# evaluated class-conditional samples. Each stage is skipped when its output is already there, so
# an interrupted demo continues where it stopped.
#   1. tokenizer    rar train-tokenizer   (28x28 padded to 32x32 -> 8x8 tokens)
#   2. tokens       rar tokenize          (train and test splits)
#   3. classifier   rar train-classifier  (for accuracy and feature-FID of samples)
#   4. generator    rar train             (random permutations annealed to raster, label dropout)
#   5. samples      rar sample            (demo/grid.png: 10 per class; demo/samples.npz: 1000 per class)
#   6. evaluation   rar eval classify     (samples vs the real test set, beside the real-data floor)
# Presets: CPU (default; ~15 min of training and sampling on 2 cores) and GPU=1 (one GPU).
set -euo pipefail
RAR=${1:-build/rar}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-demo}
mkdir -p "$OUT"
if [ -n "${GPU:-}" ]; then
  TOK_CFG=$ROOT/configs/tokenizer/fashion-mnist.yaml; RAR_CFG=$ROOT/configs/rar/fashion-mnist.yaml
  DEV=cuda; CODES=512; TOK_STEPS=8000; CLS_STEPS=3000; SAMPLE_BATCH=1000; EXTRA="model.vq_model.codebook_size=512"
else
  TOK_CFG=$ROOT/configs/tokenizer/fashion-mnist-cpu.yaml; RAR_CFG=$ROOT/configs/rar/fashion-mnist-cpu.yaml
  # 600 tokenizer and 1100 generator steps: the 15-minute promise on 2 AVX2 cores (docs/demo.md)
  DEV=cpu; CODES=256; TOK_STEPS=${TOK_STEPS:-600}; CLS_STEPS=1000; SAMPLE_BATCH=500
  EXTRA="training.max_train_steps=${GEN_STEPS:-1100}"
fi
GUIDANCE=${GUIDANCE:-3.0}
T0=$(date +%s)
# Each stage's wall time, summed up at the end beside what 2 cores took here (a slow machine shows).
NAMES=(); STARTS=()
stage() { NAMES+=("${1#*/6 }"); STARTS+=("$(date +%s)"); echo; echo "== [$(( $(date +%s) - T0 ))s] $*"; }

stage "1/6 tokenizer ($TOK_CFG)"
if [ ! -f "$OUT/tokenizer/eval.json" ]; then
  "$RAR" train-tokenizer --config "$TOK_CFG" --out "$OUT/tokenizer" --device "$DEV" --steps "$TOK_STEPS" \
    training.max_minutes=0 --resume
else echo "done earlier: $(tr -d '\n ' < "$OUT/tokenizer/eval.json")"; fi

stage "2/6 tokens"
for split in train test; do
  [ -f "$OUT/$split.rartok" ] || "$RAR" tokenize --tokenizer "$OUT/tokenizer/tokenizer.safetensors" \
    --data "fashion-mnist:$split" --pad 32 --out "$OUT/$split.rartok" --device "$DEV" --batch 256
done

stage "3/6 classifier"
[ -f "$OUT/classifier.safetensors" ] || "$RAR" train-classifier --data fashion-mnist --pad 32 --steps "$CLS_STEPS" \
  --batch 64 --width 16 --out "$OUT/classifier.safetensors" --device "$DEV"

stage "4/6 generator ($RAR_CFG)"
if [ ! -f "$OUT/rar/DONE" ]; then
  # shellcheck disable=SC2086
  "$RAR" train --config "$RAR_CFG" --data "$OUT/train.rartok" --val "$OUT/test.rartok" \
    --tokenizer "$OUT/tokenizer/tokenizer.safetensors" --out "$OUT/rar" --device "$DEV" --resume $EXTRA
  touch "$OUT/rar/DONE"
  "$RAR" plot "$OUT/rar/metrics.jsonl" --out "$OUT/curves.png" || true
fi

stage "5/6 samples (guidance $GUIDANCE)"
G="$OUT/rar/generator.safetensors"; T="$OUT/tokenizer/tokenizer.safetensors"
[ -f "$OUT/grid.png" ] || "$RAR" sample --generator "$G" --tokenizer "$T" --all-classes --per-class 10 \
  --cfg "$GUIDANCE" --cfg-power 1 --seed 1 --out "$OUT/grid.png" --device "$DEV" \
  --class-names "$OUT/train.rartok.classes.txt"
[ -f "$OUT/samples.npz" ] || "$RAR" sample --generator "$G" --tokenizer "$T" --all-classes --per-class 1000 \
  --cfg "$GUIDANCE" --cfg-power 1 --seed 2 --batch "$SAMPLE_BATCH" --out "$OUT/samples.npz" --device "$DEV"

stage "6/6 evaluation (classifier features; real-data floor = train images vs test images)"
echo "-- samples vs fashion-mnist:test"
"$RAR" eval classify --classifier "$OUT/classifier.safetensors" --samples "$OUT/samples.npz" \
  --ref fashion-mnist:test --pad 32 --device "$DEV"
echo "-- floor: 10000 real training images vs fashion-mnist:test"
"$RAR" eval classify --classifier "$OUT/classifier.safetensors" --samples fashion-mnist:train --max-images 10000 \
  --ref fashion-mnist:test --pad 32 --device "$DEV"
echo
STARTS+=("$(date +%s)")
if [ -z "${GPU:-}" ]; then TYPICAL=(146 39 28 443 50 11); else TYPICAL=(207 6 13 102 10 5); fi
echo
echo "stage times (this run; typical on the reference machine: README, Fashion-MNIST demo):"
for i in "${!NAMES[@]}"; do
  printf '  %-40s %5d s   (typical %d s)\n' "${NAMES[$i]%% (*}" $(( STARTS[i + 1] - STARTS[i] )) "${TYPICAL[$i]}"
done
echo "== done in $(( $(date +%s) - T0 ))s: $OUT/grid.png (rows = classes: $(paste -sd, "$OUT/train.rartok.classes.txt")),"
echo "   $OUT/samples.npz, $OUT/curves.png, $OUT/tokenizer/, $OUT/rar/"
