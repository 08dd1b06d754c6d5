#!/usr/bin/env bash
# Installs everything the CPU build needs on a fresh Debian 12 machine (run as root):
#   1. compilers and the Debian -dev packages we build against (apt, only what is missing);
#   2. LibTorch 2.x, taken from the PyPI `torch` wheel (pip download, no install into Python).
# The wheel is the CUDA build; its CPU half (libtorch_cpu + libc10) needs only libcudart and
# libcupti at load time, which come from their own small PyPI wheels. Everything lands in
# .deps/libtorch (ignored by git); a marker file makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=${TORCH_VERSION:-2.11.0}
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
DEST=.deps/libtorch

PKGS=(build-essential cmake ninja-build pkg-config python3 python3-pip unzip ca-certificates
      libzip-dev libpng-dev libjpeg-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev
      libmicrohttpd-dev libsimdjson-dev libprotobuf-dev protobuf-compiler libisal-dev libssl-dev libcpp-httplib-dev libgtest-dev zlib1g-dev libgloo-dev libcairo2-dev dataset-fashion-mnist)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[deps] apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$DEST/.complete-$TORCH_VERSION" ]; then
  echo "[deps] LibTorch $TORCH_VERSION from the PyPI torch wheel (about 530 MB download)"
  start=$(date +%s)
  rm -rf "$DEST" .deps/wheels && mkdir -p .deps/wheels "$DEST/lib"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
    --platform manylinux_2_17_x86_64 -d .deps/wheels \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"
  tmp=.deps/unpack && rm -rf "$tmp" && mkdir -p "$tmp"
  unzip -q -o .deps/wheels/torch-*.whl 'torch/include/*' 'torch/lib/libtorch_cpu.so' \
    'torch/lib/libc10.so' 'torch/lib/libgomp.so.1' -d "$tmp"
  unzip -q -o .deps/wheels/nvidia_cuda_runtime-*.whl 'nvidia/cu13/lib/libcudart.so.13' -d "$tmp"
  unzip -q -o .deps/wheels/nvidia_cuda_cupti-*.whl 'nvidia/cu13/lib/libcupti.so.13' -d "$tmp"
  mv "$tmp/torch/include" "$DEST/include"
  mv "$tmp"/torch/lib/* "$tmp"/nvidia/cu13/lib/* "$DEST/lib/"
  rm -rf "$tmp" .deps/wheels
  echo "$TORCH_VERSION" > "$DEST/.complete-$TORCH_VERSION"
  echo "[deps] LibTorch ready in $DEST ($(( $(date +%s) - start )) s)"
fi
