#!/usr/bin/env bash
# A training-step change measured against the build it replaces, in one GPU session (the two columns
# then share the machine and its state). Here, first: `OLD=<rev> scripts/gpu-pack.sh` writes that
# revision's sources to .devrun/old.tar.gz (carry it with .devrun/debs and .devrun/shared). On the
# GPU machine, after `make gpu` of the new code, in the background (it outlives a device call; poll
# DIR/steps.log and copy DIR's .md files to $OUT):
#   setsid nohup bench/gpu_train_ab.sh build-gpu/rar DIR < /dev/null > /dev/null 2>&1 &
# It builds the old revision in /tmp/oldsrc, then writes into DIR: tests.log (TESTS, default the
# fused ops', fp8 and training step's CUDA tests; "" skips them), fp8-profile.md (rar_xl with
# training.fp8, eager, top 40 kernels; FP8=0 skips it and the next), fp8-products.md
# (bench/fp8_products.py; FP8_PRODUCTS=0 skips it), train-new.md (first the NEW_ONLY rows, for the
# new binary alone: default the fp8 and recompute-mlp ones; then rar_b, rar_xl, rar_xl with 12/32
# blocks recomputed; REPEATS processes each), profile-new.md (rar_xl, eager, top 40 kernels),
# numerics.md (bench/gpu_numerics.sh old vs new), train-old.md (the same rows of the old build;
# OLD_ROWS=0 skips them), and DONE. Newest first: a chain cut short by the lease still says most.
set -u
NEW=${1:-build-gpu/rar}
DIR=${2:-/tmp/train-ab}
REPEATS=${REPEATS:-3}
mkdir -p "$DIR"
step() { echo "== $(date +%T) $*" >> "$DIR/steps.log"; }
[ -f .devrun/old.tar.gz ] || { step "no .devrun/old.tar.gz (OLD=<rev> scripts/gpu-pack.sh)"; touch "$DIR/DONE"; exit 1; }
. scripts/gpu-env.sh
rm -rf /tmp/oldsrc && mkdir -p /tmp/oldsrc && tar xzf .devrun/old.tar.gz -C /tmp/oldsrc && ln -sfn "$PWD/.devrun" /tmp/oldsrc/old/.devrun
step "old build (in the background)"
(cd /tmp/oldsrc/old && make gpu JOBS=8 GPU_TARGET=rar > "$DIR/build-old.log" 2>&1; echo "old build rc $?" > "$DIR/old-built") &
TESTS=${TESTS-FusedOps*:Fp8*:TrainRarCuda.*}
if [ -n "$TESTS" ]; then
  step tests
  timeout 400 "$(dirname "$NEW")/rar_tests" --gtest_filter="$TESTS" > "$DIR/tests.log" 2>&1
  echo "tests rc $?" >> "$DIR/steps.log"
  grep -E '^\[  (PASSED|FAILED) |Failure' -A3 "$DIR/tests.log" | head -40 >> "$DIR/steps.log"
fi
if [ "${FP8:-1}" = 1 ]; then
  step fp8-profile  # its rows are among NEW_ONLY's
  timeout 200 "$NEW" bench train --preset rar_xl --batch 64 --fp8 --no-graph --profile 40 > "$DIR/fp8-profile.md" 2>&1
fi
if [ "${FP8:-1}" = 1 ] && [ "${FP8_PRODUCTS:-1}" = 1 ]; then
  step fp8-products; timeout 300 python3 bench/fp8_products.py rar_b rar_xl > "$DIR/fp8-products.md" 2>&1
fi
rows() {  # rows BINARY: the rows, REPEATS processes each
  for args in "--preset rar_b --batch 64" "--preset rar_xl --batch 64" "--preset rar_xl --batch 64 --checkpoint-layers 12"; do
    for i in $(seq "$REPEATS"); do
      timeout 120 "$1" bench train --no-header $args 2>&1 | grep '^| rar' || echo "| failed: $args |"
    done
  done
}
step rows-new-only
NEW_ONLY=${NEW_ONLY-"--preset rar_xl --fp8|--preset rar_b --fp8|--preset rar_xl --recompute-mlp --checkpoint-layers 4|--preset rar_xl --recompute-mlp --checkpoint-layers 6"}
IFS='|' read -r -a extra <<< "$NEW_ONLY"
for args in "${extra[@]}"; do
  [ -n "$args" ] || continue
  for i in $(seq "$REPEATS"); do
    timeout 120 "$NEW" bench train --no-header --batch 64 $args 2>&1 | grep '^| rar' || echo "| failed: $args |"
  done
done > "$DIR/train-new.md"
step rows-new; rows "$NEW" >> "$DIR/train-new.md"
step profile
timeout 200 "$NEW" bench train --preset rar_xl --batch 64 --no-graph --profile 40 > "$DIR/profile-new.md" 2>&1
step wait-old; while [ ! -f "$DIR/old-built" ]; do sleep 2; done; cat "$DIR/old-built" >> "$DIR/steps.log"
OLD=/tmp/oldsrc/old/build-gpu/rar
step numerics; NUMERICS_DIR=/tmp/numerics bench/gpu_numerics.sh "$OLD" "$NEW" 200 > "$DIR/numerics.md" 2>&1
if [ "${OLD_ROWS:-1}" = 1 ]; then step rows-old; rows "$OLD" > "$DIR/train-old.md"; fi
step done; touch "$DIR/DONE"
