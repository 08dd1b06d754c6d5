#!/usr/bin/env bash
# The second performance round's target rows, each measured REPEATS times in separate processes, with the spread:
# median, min and max of every number (sampling: tokens and end-to-end images/s, batch-1 latency;
# training: sequences/s and peak memory). One line per target; the raw rows go to RAW (default
# /dev/null). ~1.5 minutes per repeat on one H200. From the repository root on the GPU machine.
# PROFILE=file: afterwards a kernel profile of each target not measured at batch 1 (what stands in
# the way), ~2 minutes more.
# Usage: [REPEATS=3] [RAW=raw.md] [PROFILE=profile.md] bench/gpu_targets.sh build-gpu/rar
set -u
RAR=${1:-build-gpu/rar}
REPEATS=${REPEATS:-3}
RAW=${RAW:-/dev/null}
: > "$RAW"
# summary NAME COLUMN... : median [min-max] of the markdown columns (1-based after the first '|') over the lines on stdin
summary() {
  local name=$1; shift
  awk -F'|' -v name="$name" -v cols="$*" '
    BEGIN { n = split(cols, c, " ") }
    { for (i = 1; i <= n; ++i) { v = $(c[i] + 1); gsub(/ /, "", v); vals[i, ++cnt[i]] = v + 0 } }
    END {
      line = "| " name
      for (i = 1; i <= n; ++i) {
        k = cnt[i]; if (k == 0) { line = line " | -"; continue }
        for (a = 1; a <= k; ++a) s[a] = vals[i, a]
        for (a = 1; a <= k; ++a) for (b = a + 1; b <= k; ++b) if (s[b] < s[a]) { t = s[a]; s[a] = s[b]; s[b] = t }
        med = k % 2 ? s[(k + 1) / 2] : (s[k / 2] + s[k / 2 + 1]) / 2
        line = line sprintf(" | %.1f [%.1f-%.1f]", med, s[1], s[k])
      }
      if (n == 1) line = line " | -"
      print line " | " k " runs |"
    }'
}
sample() {  # sample ARGS...: REPEATS rows of `rar bench sample`
  for r in $(seq "$REPEATS"); do
    timeout "${ROW_TIMEOUT:-120}" "$RAR" bench sample --no-header --engine graph "$@" 2>&1 | tee -a "$RAW" | grep '^| rar'
  done
}
latency() {  # latency ARGS...: REPEATS latency lines of a batch-1 run, as "| ms |"
  for r in $(seq "$REPEATS"); do
    timeout "${ROW_TIMEOUT:-120}" "$RAR" bench sample --no-header --engine graph --batch 1 "$@" 2>&1 | tee -a "$RAW" |
      sed -nE 's/^latency: ([0-9.]+) ms.*/| \1 |/p'
  done
}
train() {
  for r in $(seq "$REPEATS"); do
    timeout "${ROW_TIMEOUT:-120}" "$RAR" bench train --no-header "$@" 2>&1 | tee -a "$RAW" | grep '^| rar'
  done
}
echo "| target | first number: median [min-max] | second number | runs |"
echo "|---|---|---|---|"
# sampling rows: column 7 = tokens images/s, 8 = end-to-end images/s (bench sample's table)
sample --preset rar_xl --batch 256 | summary "rar_xl exact cache, batch 256: tokens images/s (target >= 230)" 7
sample --preset rar_xl --batch 1024 --kv-cache fp8 --decode --repeats 2 |
  summary "rar_xl fp8 cache, batch 1024: tokens / end to end (>= 360 / >= 300)" 7 8
sample --preset rar_b --batch 256 | summary "rar_b exact cache, batch 256: tokens (>= 560)" 7
sample --preset rar_b --batch 1024 --kv-cache fp8 --decode --repeats 2 |
  summary "rar_b fp8 cache, batch 1024: tokens / end to end (>= 950 / >= 650)" 7 8
latency --preset rar_xl | summary "rar_xl one image, ms (<= 150)" 1
latency --preset rar_xl --attention-kernel warp | summary "rar_xl one image, warp attention (the old default), ms" 1
latency --preset rar_xl --speculative 16 | summary "rar_xl one image, speculative W 16, ms (random weights; tokens per call: targets-raw.md)" 1
latency --preset rar_xl --speculative 32 |
  summary "rar_xl one image, speculative W 32, ms (random weights; tokens per call: targets-raw.md)" 1
# training: column 5 = sequences/s, 8 = peak GiB (bench train's table); reference 158 seq/s at 68.3 GiB
train --preset rar_xl --batch 64 --checkpoint-layers 12 |
  summary "rar_xl training bf16, batch 64, 12 of 32 recomputed: sequences/s, peak GiB (>= 237 at <= 34.2)" 5 8
# the profiles: where each target's time goes
if [ -n "${PROFILE:-}" ]; then
  : > "$PROFILE"
  for args in "sample --preset rar_xl --batch 256" "sample --preset rar_xl --batch 1024 --kv-cache fp8" \
              "sample --preset rar_b --batch 256" "sample --preset rar_b --batch 1024 --kv-cache fp8" \
              "train --preset rar_xl --batch 64 --checkpoint-layers 12"; do
    echo "## rar bench $args --profile 20" >> "$PROFILE"
    eng=; [ "${args%% *}" = sample ] && eng="--engine graph --repeats 1"
    timeout "${ROW_TIMEOUT:-120}" "$RAR" bench $args $eng --no-header --profile 20 >> "$PROFILE" 2>&1 ||
      echo "(failed or timed out)" >> "$PROFILE"
  done
fi
