#!/usr/bin/env bash
# The paper's headline ablation at a real training length (issue #21), on one GPU. Protocol, fixed
# before any run:
#   data       Fashion-MNIST tokens from the GPU demo's tokenizer (512 codes, 8x8 grid): the whole
#              60k training set; the 10k test set for validation NLL (raster order).
#   model      configs/rar/fashion-mnist.yaml (H=384, L=8, 8 heads; batch 256, lr 1e-3, warmup 200,
#              cosine to 1e-5, seed 42), the same for every arm.
#   length     EPOCHS (default 100) epochs = EPOCHS·60000/256 steps, the same for every arm.
#   arms       raster  r = 0 throughout              (anneal 0 → 0)
#              random  r = 1 throughout              (anneal start = end = 10·steps)
#              a50-75  r from 1 to 0 over 50%-75%    (the paper's epochs 200-300 of 400)
#              a25-50  r from 1 to 0 over 25%-50%    (another row of the paper's table)
#   scoring    val NLL (raster, the whole test set) at the end; 10,000 samples (1000 per class) at
#              guidance 1, 2 and 3 (pow-cosine power 1), seed 7, raster order, exact KV cache;
#              the demo's classifier: accuracy and feature-FID vs fashion-mnist:test, beside the
#              real-data floor (10,000 training images vs the test set); a 10x10 sample grid.
#   fp8 cache  on the best arm: the guidance-2 samples again with --kv-cache fp8 (same seeds),
#              scored the same way, and the share of tokens identical to the exact cache's.
# Every run started is reported; nothing is dropped.
#
# A device call lasts at most 10 minutes, so the script is resumable at every stage: training runs
# with a time budget (--minutes, checkpointed; --resume continues), samples are resumable .npz
# shards, finished stages leave DONE files. Run it again and again on a warm machine (files stay
# between calls of one session) until it prints the table:
#   STAGE_MINUTES=8 experiments/annealing-gpu.sh build-gpu/rar DEMO_DIR OUT_DIR
# DEMO_DIR holds the GPU demo's tokenizer/tokenizer.safetensors, train.rartok, test.rartok and
# classifier.safetensors (`make demo GPU=1`; small enough to carry: ~30 MB).
set -euo pipefail
RAR=${1:-build-gpu/rar}
DEMO=${2:-demo}
OUT=${3:-experiments/out/annealing-gpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EPOCHS=${EPOCHS:-100}
STAGE_MINUTES=${STAGE_MINUTES:-8}
ARMS=${ARMS:-"raster random a50-75 a25-50"}
CFG=$ROOT/configs/rar/fashion-mnist.yaml
T0=$(date +%s)
DEADLINE=$((T0 + 60 * STAGE_MINUTES))
left() { echo $(( (DEADLINE - $(date +%s)) / 60 )); }
for f in tokenizer/tokenizer.safetensors train.rartok test.rartok classifier.safetensors; do
  [ -f "$DEMO/$f" ] || { echo "missing $DEMO/$f (make demo GPU=1)" >&2; exit 1; }
done
mkdir -p "$OUT"
N=${N_TRAIN:-60000}  # Fashion-MNIST's training split, one sequence per image
STEPS=$(( EPOCHS * N / 256 ))
anneal() {
  case $1 in
    raster) echo "0 0" ;;
    random) echo "$((STEPS * 10)) $((STEPS * 10))" ;;
    a50-75) echo "$((STEPS / 2)) $((STEPS * 3 / 4))" ;;
    a25-50) echo "$((STEPS / 4)) $((STEPS / 2))" ;;
  esac
}
echo "annealing-gpu: $EPOCHS epochs = $STEPS steps of 256; arms: $ARMS; this call until $(date -d @$DEADLINE +%T)"

# ---- training (time-sliced)
for arm in $ARMS; do
  [ -f "$OUT/$arm/DONE" ] && continue
  m=$(left); [ "$m" -ge 1 ] || { echo "out of time for this call: run again"; exit 0; }
  read -r start end <<< "$(anneal $arm)"
  "$RAR" train --config "$CFG" --data "$DEMO/train.rartok" --val "$DEMO/test.rartok" --out "$OUT/$arm" --device cuda \
    --steps "$STEPS" --minutes "$m" --resume model.generator.randomness_anneal_start="$start" \
    model.generator.randomness_anneal_end="$end" experiment.generate_every=0 experiment.eval_every=$((STEPS / 10)) \
    experiment.save_every=$((STEPS / 20)) experiment.eval_examples=0 > "$OUT/$arm.train.log" 2>&1 || {
    tail -5 "$OUT/$arm.train.log"; exit 1; }
  grep -q "finished at step $STEPS" "$OUT/$arm.train.log" && touch "$OUT/$arm/DONE" || { echo "$arm: continues next call"; exit 0; }
done

# ---- samples and scores
T=$DEMO/tokenizer/tokenizer.safetensors
C=$DEMO/classifier.safetensors
score() {  # score NAME SAMPLES -> a line in $OUT/scores.tsv
  grep -q "^$1	" "$OUT/scores.tsv" 2>/dev/null && return
  res=$("$RAR" eval classify --classifier "$C" --samples "$2" --ref fashion-mnist:test --pad 32 --device cuda 2>/dev/null)
  printf '%s\t%s\t%s\n' "$1" "$(echo "$res" | awk '/^accuracy/ {print $2}')" \
    "$(echo "$res" | awk '/^feature-FID/ {print $2}')" >> "$OUT/scores.tsv"
}
[ "$(left)" -ge 1 ] || { echo "out of time for this call: run again"; exit 0; }
score floor fashion-mnist:train
for arm in $ARMS; do
  G=$OUT/$arm/generator.safetensors
  [ -f "$OUT/$arm/grid.png" ] || "$RAR" sample --generator "$G" --tokenizer "$T" --all-classes --per-class 10 --cfg 2 \
    --cfg-power 1 --seed 7 --out "$OUT/$arm/grid.png" --device cuda --class-names "$DEMO/train.rartok.classes.txt" > /dev/null
  for g in 1 2 3; do
    [ "$(left)" -ge 1 ] || { echo "out of time for this call: run again"; exit 0; }
    s=$OUT/$arm/samples-g$g.npz
    [ -f "$s" ] || "$RAR" sample --generator "$G" --tokenizer "$T" --all-classes --per-class 1000 --cfg $g --cfg-power 1 \
      --seed 7 --batch 1000 --tokens-out "$OUT/$arm/tokens-g$g.npy" --out "$s" --device cuda > /dev/null
    score "$arm g$g" "$s"
  done
done
echo "training, sampling and scoring done in this call after $(( $(date +%s) - T0 )) s"
