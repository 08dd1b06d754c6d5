#!/usr/bin/env bash
# make browser-test — installs what the browser test needs (Debian: chromium, chromium-driver,
# python3-selenium) when missing, then runs tests/browser/page_test.py against `rar serve` with
# the tiny reference models and, when `make demo` has run, with the demo's Fashion-MNIST models,
# saving a screenshot of the page to docs/serve-page.png (from the demo models when present).
set -euo pipefail
cd "$(dirname "$0")/.."
RAR=${1:-build/rar}
missing=()
for p in chromium chromium-driver python3-selenium; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[browser-test] apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
SHARED=${RAR_SHARED_DIR:-../shared}
if [ -f demo/rar/generator.safetensors ]; then
  /usr/bin/python3 tests/browser/page_test.py "$RAR" "$SHARED/reference/tiny_rar.bin" "$SHARED/reference/tiny_vq.bin"
  /usr/bin/python3 tests/browser/page_test.py "$RAR" demo/rar/generator.safetensors demo/tokenizer/tokenizer.safetensors \
    docs/serve-page.png --size 32 --n 12 --cls 9 --cfg 3 --class-names demo/train.rartok.classes.txt
else
  /usr/bin/python3 tests/browser/page_test.py "$RAR" "$SHARED/reference/tiny_rar.bin" "$SHARED/reference/tiny_vq.bin" \
    docs/serve-page.png
fi
