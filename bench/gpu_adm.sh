#!/usr/bin/env bash
# rar eval adm's speed end to end on the GPU machine: 50,000 samples plus the 10,000-image
# reference batch, both as ADM-layout .npz files of 256x256 noise images (the network's cost does
# not depend on the pixels), through the FID Inception network with random weights (the same
# graph as pytorch-fid's file; its values do not change the time). Three timed runs, the first
# writing the reference's activation cache and the others reading it (as a user's second
# evaluation does), then one without the cache. Fixtures in $DIR (default /tmp/adm; ~12 GB).
# Usage: [DEVICE=cuda] [DIR=/tmp/adm] bench/gpu_adm.sh build-gpu/rar [SAMPLES] [REFERENCE]
set -eu
RAR=${1:-build-gpu/rar}
N=${2:-50000}
REF=${3:-10000}
DIR=${DIR:-/tmp/adm}
mkdir -p "$DIR"
[ -f "$DIR/inception.safetensors" ] || "$RAR" bench inception --out "$DIR/inception.safetensors"
[ -f "$DIR/ref_$REF.npz" ] || "$RAR" bench images --count "$REF" --seed 1 --out "$DIR/ref_$REF.npz"
[ -f "$DIR/samples_$N.npz" ] || "$RAR" bench images --count "$N" --seed 2 --out "$DIR/samples_$N.npz"
rm -f "$DIR/ref_acts.npz"
run() {  # LABEL=... run ARGS...: wall seconds of one rar eval adm
  local t0 t1
  t0=$(date +%s%N)
  "$RAR" eval adm "$DIR/ref_$REF.npz" "$DIR/samples_$N.npz" --inception "$DIR/inception.safetensors" --device "${DEVICE:-cuda}" \
    --batch 250 "$@" --json "$DIR/out.json" > "$DIR/log" 2>&1 || { echo "| $LABEL | failed: $(tail -1 "$DIR/log") |"; return; }
  t1=$(date +%s%N)
  printf '| %s | %d + %d | %d.%d |\n' "$LABEL" "$N" "$REF" $(( (t1 - t0) / 1000000000 )) $(( (t1 - t0) / 100000000 % 10 ))
}
echo "| run | samples + reference images | seconds end to end |"
echo "|---|---|---|"
LABEL="cold: reference activations computed and cached" run --cache "$DIR/ref_acts.npz"
LABEL="warm: reference activations read from the cache" run --cache "$DIR/ref_acts.npz"
LABEL="warm, again" run --cache "$DIR/ref_acts.npz"
LABEL="no cache" run
