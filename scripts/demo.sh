#!/usr/bin/env bash
# The main job, at this stage of the project (foundation): load the reference RAR generator
# written by the published PyTorch code, show what it holds, convert it to safetensors, and
# score token sequences with it — checking the result against the reference code's numbers.
# The full demo (train a tokenizer and RAR on Fashion-MNIST, sample, evaluate) replaces this
# as the sampler, tokenizer and trainer land.
set -euo pipefail
RAR=${1:-build/rar}
REF=$(cd "$(dirname "$0")/../.." && pwd)/shared/reference
OUT=demo
mkdir -p "$OUT"
echo "== rar demo (foundation stage: checkpoint IO + generator scoring) =="
echo "-- rar info $REF/tiny_rar.bin"
"$RAR" info --no-tensors "$REF/tiny_rar.bin"
echo "-- rar convert -> $OUT/tiny_rar.safetensors"
"$RAR" convert "$REF/tiny_rar.bin" "$OUT/tiny_rar.safetensors"
for setting in "raster:" "permuted:--orders $REF/ref_orders.npy" "null-class:--null-class"; do
  name=${setting%%:*}; extra=${setting#*:}
  echo "-- rar score ($name order/condition)"
  # shellcheck disable=SC2086
  "$RAR" score --generator "$OUT/tiny_rar.safetensors" --tokens "$REF/ref_tokens.npy" \
    --classes "$REF/ref_classes.npy" $extra --out "$OUT/nll_$name.npy"
done
echo "reference (published PyTorch code), raster row: 7.0237815 6.9917118 6.9981713 7.0341908"
