#!/usr/bin/env bash
# Run here (Debian 12) before a GPU-machine call: gathers what that machine lacks into the
# ignored folder .devrun/ (carry it): libzip's .deb files, the shared reference vectors and Fashion-MNIST;
# with OLD=<rev>, that revision's sources (.devrun/old.tar.gz, for bench/gpu_train_ab.sh); with
# DEMO=<dir>, a demo's tokens, tokenizer and classifier and Fashion-MNIST's test split alone, as
# experiments/annealing-gpu.sh reads them there, in one archive (.devrun/demo.tgz: with the reference
# files and the .deb files it stays under the 64 MiB a call carries; scripts/gpu-session.sh unpacks it).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .devrun/debs .devrun/shared
(cd .devrun/debs && [ -n "$(ls libzip4_*.deb 2>/dev/null)" ] || apt-get download libzip4 libzip-dev >/dev/null)
# libmicrohttpd for `rar serve` (and cpp-httplib, the tests' HTTP client, with OpenSSL and
# brotli); without them the GPU build still works, with `rar serve` saying what it lacks
(cd .devrun/debs && [ -n "$(ls libcpp-httplib-dev_*.deb 2>/dev/null)" ] ||
   apt-get download libcpp-httplib-dev libcpp-httplib0.11 libssl-dev libssl3 libbrotli-dev libbrotli1 >/dev/null)
(cd .devrun/debs && [ -n "$(ls libmicrohttpd-dev_*.deb 2>/dev/null)" ] ||
   apt-get download libmicrohttpd-dev libmicrohttpd12 >/dev/null)
# simdjson (the published .jsonl token files): needed by the build
(cd .devrun/debs && [ -n "$(ls libsimdjson-dev_*.deb 2>/dev/null)" ] ||
   apt-get download libsimdjson-dev libsimdjson14 >/dev/null)
# gloo headers (the symbols are inside libtorch): CPU data parallel there too
(cd .devrun/debs && [ -n "$(ls libgloo-dev_*.deb 2>/dev/null)" ] || apt-get download libgloo-dev >/dev/null)
# OLD=<rev>: that revision's sources for bench/gpu_train_ab.sh (a change against the build it replaces)
if [ -n "${OLD:-}" ]; then
  git archive --format=tar.gz --prefix=old/ "$OLD" src tests configs CMakeLists.txt Makefile scripts bench > .devrun/old.tar.gz
fi
rm -rf .devrun/shared/reference && cp -r ../shared/reference .devrun/shared/reference
chmod -R u+w .devrun/shared
# Fashion-MNIST (Debian's dataset-fashion-mnist) for training runs there: RAR_DATASETS_DIR=$PWD/.devrun/datasets
mkdir -p .devrun/datasets && rm -rf .devrun/datasets/fashion-mnist && cp -r /usr/share/datasets/fashion-mnist .devrun/datasets/
if [ -n "${DEMO:-}" ]; then
  tmp=$(mktemp -d) && mkdir -p "$tmp/demo/tokenizer" "$tmp/dstest/fashion-mnist"
  cp "$DEMO"/{train.rartok,test.rartok,train.rartok.classes.txt,classifier.safetensors} "$tmp/demo/"
  cp "$DEMO/tokenizer/tokenizer.safetensors" "$tmp/demo/tokenizer/"
  cp /usr/share/datasets/fashion-mnist/t10k-* "$tmp/dstest/fashion-mnist/"
  tar czf .devrun/demo.tgz -C "$tmp" demo dstest && rm -rf "$tmp"
fi
du -sh .devrun
