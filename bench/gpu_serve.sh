#!/usr/bin/env bash
# `rar serve` under load on the GPU machine (after `make gpu` and `. scripts/gpu-env.sh`), random
# weights: for rar_b and rar_xl, K concurrent clients of 1-8 images each (bench/serve_load.py),
# one request at a time, single-image latency when idle, and `rar bench sample` at the batch the
# server filled, for the bench/RESULTS.md rows.
#   [MODELS="rar_b rar_xl"] bench/gpu_serve.sh build-gpu/rar [seconds per load run]
set -u
R=${1:-build-gpu/rar}
SECS=${2:-45}
D=${OUT:-/tmp/rar-serve}
mkdir -p "$D"
PY=$(command -v python3)
for m in ${MODELS:-rar_b rar_xl}; do
  "$R" bench weights --preset $m --out "$D/$m.safetensors" --tokenizer-out "$D/vq.safetensors" > /dev/null
  port=$((18000 + RANDOM % 1000))
  "$R" serve --generator "$D/$m.safetensors" --tokenizer "$D/vq.safetensors" --device cuda --precision bf16 \
    --port $port --max-batch 256 --max-wait-ms 20 ${SERVE_FLAGS:-} > "$D/serve-$m.log" 2>&1 &
  pid=$!
  url="http://127.0.0.1:$port"
  for i in $(seq 1 120); do $PY -c "import urllib.request; urllib.request.urlopen('$url/health')" 2>/dev/null && break; sleep 1; done
  # the one-client rows: a fixed number of requests (the same seeded sizes every run), not a time
  $PY bench/serve_load.py --url $url --clients 1 --min-images 1 --max-images 1 --requests 40 --seconds 120 --label "$m idle, 1 image"
  $PY bench/serve_load.py --url $url --clients 1 --requests 30 --seconds 120 --label "$m one at a time, 1-8"
  for k in 32 128; do
    $PY bench/serve_load.py --url $url --clients $k --seconds "$SECS" --label "$m $k clients, 1-8"
  done
  kill $pid; wait $pid 2>/dev/null
  for b in 64 256; do "$R" bench sample --preset $m --batch $b --decode --repeats 2; done
done
