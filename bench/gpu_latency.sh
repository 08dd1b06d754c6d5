#!/usr/bin/env bash
# Interactive latency: one image with guidance (2 rows per step), 256 steps, random weights, graph
# engine — the time a user waits for one image. The default path (attention kernel auto: split,
# 8 warps per row and head, at one image) beside the warp and block kernels; then kernel profiles
# of one rar_xl image (kernel time vs the wall time above: the rest is launch gaps and host work).
# QUICK=1: the rar_xl rows that decide, one rar_b pair and one profile pair (~2 minutes); else
# both models, fp8 caches, batches of 4, the block kernel, and where the split variant stops paying
# at larger batches (~6 minutes). From the repository root on the GPU machine.
# Speculative Jacobi decoding (--speculative W): random weights keep drafts as their distributions
# allow (rar_xl, guidance 4: 2.6 of 4, 3.5 of 16 per call), not as a trained model's would, so
# those rows give the time of one call of W positions (the latency line's "us per call") and only
# an example of the calls an image needs; GEN=a trained generator adds rows where a trained model
# decides how many tokens a call keeps (e.g. the Fashion-MNIST generators of experiments/).
# Usage: [QUICK=1] [GEN=generator.safetensors] bench/gpu_latency.sh build-gpu/rar [profile.md]
set -u
RAR=${1:-build-gpu/rar}
PROFILE=${2:-/dev/null}
row() {  # [REPEATS=n] row ARGS...: the table row and the latency line (5 repeats unless told)
  local o
  o=$(timeout ${ROW_TIMEOUT:-90} "$RAR" bench sample --no-header --engine graph --repeats "${REPEATS:-5}" "$@" 2>&1)
  echo "$o" | grep -qE '^\| [^-]' && echo "$o" | grep -E '^\| [^-]|^latency' | paste -sd ' ' ||
    echo "| failed: $* | $(echo "$o" | tail -1) |"
}
echo "| model | batch | cfg | precision | engine | steps | tokens images/s | end-to-end images/s | TFLOP/s | of bf16 peak | peak GiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
models="rar_xl rar_b"
[ "${QUICK:-0}" = 1 ] && models=rar_xl
for m in $models; do
  row --preset $m --batch 1 --decode                  # the default (auto: split at one image)
  row --preset $m --batch 1 --attention-kernel warp
  row --preset $m --batch 1 --kv-cache fp8
  [ "${QUICK:-0}" = 1 ] && continue
  row --preset $m --batch 1 --attention-kernel block
  row --preset $m --batch 4
  row --preset $m --batch 4 --attention-kernel split
done
# one call of W positions (random weights: the time per call; the calls per image only an example)
for w in 4 16; do row --preset rar_xl --batch 1 --speculative $w; done
if [ -n "${GEN:-}" ]; then  # a trained model: the calls per image too
  for w in 0 4 8 16; do row --generator "$GEN" --batch 1 --cfg 2 --speculative $w; done
fi
if [ "${QUICK:-0}" = 1 ]; then
  row --preset rar_b --batch 1
  row --preset rar_b --batch 1 --attention-kernel warp
else
  # where the split variant stops paying: batches of 16, 64 and 256 images (32-512 rows)
  for b in 16 64 256; do
    REPEATS=2 row --preset rar_xl --batch $b
    REPEATS=2 row --preset rar_xl --batch $b --attention-kernel split
  done
fi
# where the split attention kernel stops paying at small batches (it exists only fused with the
# q/k norms of a step, so whole steps are timed): 2-8 images (4-16 rows), warp vs split
for b in 2 4 8; do
  for k in warp split; do REPEATS=2 row --preset rar_xl --batch $b --attention-kernel $k; done
done
: > "$PROFILE"
for k in warp split; do
  echo "## rar_xl, batch 1, $k attention" >> "$PROFILE"
  timeout 90 "$RAR" bench sample --no-header --engine graph --preset rar_xl --batch 1 --repeats 2 \
    --attention-kernel $k --profile 16 >> "$PROFILE" 2>&1
done
echo "## rar_xl, batch 1, speculative 16 (random weights)" >> "$PROFILE"
timeout 90 "$RAR" bench sample --no-header --engine graph --preset rar_xl --batch 1 --repeats 2 --speculative 16 \
  --profile 16 >> "$PROFILE" 2>&1
[ "$PROFILE" = /dev/null ] || grep -E "^##|^kernel time|^latency|^\| (attention|matmul|other)" "$PROFILE"
