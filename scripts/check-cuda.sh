#!/usr/bin/env bash
# make cuda-check — compiles what only the CUDA build compiles (the host code in the cuda/ folders:
# model/ops/cuda, util/cuda; any source testing RAR_WITH_CUDA; the kernels in src/kernels/)
# on a machine without a GPU: the CUDA toolkit (nvcc) and LibTorch's headers are enough to catch
# compile errors before a GPU-machine call. Nothing is linked or run.
# The tests are checked too, each file alone: the CPU build compiles them in unity batches, where a
# file may use what another file of its batch included; the CUDA build compiles each alone.
# ALL=1: every source and test alone (the same hazard in src/; ~10 minutes on two cores; the
# default, ~3).
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
command -v "$CUDA_HOME/bin/nvcc" >/dev/null || { echo "cuda-check: no nvcc in $CUDA_HOME/bin (set CUDA_HOME)"; exit 1; }
T=.deps/libtorch/include
FLAGS=(-std=gnu++17 -DRAR_WITH_CUDA=1 -D_GLIBCXX_USE_CXX11_ABI=1 -Isrc -Itests -isystem "$T"
       -isystem "$T/torch/csrc/api/include" -isystem "$CUDA_HOME/include" -isystem /usr/include/libpng16
       -DRAR_SHARED_DIR='""' -DRAR_TEST_DATA='""' -DRAR_BIN='""' -DRAR_FUZZ_TEST_DATA='""' -DRAR_FUZZ_SOURCE_DIR='""')
hosts=$( (ls src/*/cuda/*.cpp src/*/*/cuda/*.cpp 2>/dev/null; grep -rl RAR_WITH_CUDA src --include=*.cpp || true
          ls tests/*.cpp; if [ "${ALL:-0}" = 1 ]; then find src -name '*.cpp'; fi) | sort -u)
# (not the TensorBoard event code: its own target, compiled alone in every build, against the
# system's protobuf, which LibTorch's bundled protobuf headers here would shadow)
hosts=$(printf '%s\n' $hosts | grep -v '^src/io/event_proto.cpp$' || true)
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
failed=0
# (xargs exits 123 when any file failed: counted, the kernels still checked)
printf '%s\n' $hosts | xargs -P "$(nproc)" -I{} sh -c 'g++ "$@" -fsyntax-only {} && echo "ok   {}" || { echo "FAIL {}"; exit 1; }' \
  _ "${FLAGS[@]}" || failed=$((failed + 1))
for cu in src/kernels/*.cu; do
  # (an `&&` list's failure does not stop a `set -e` script: count it)
  if "$CUDA_HOME/bin/nvcc" -std=c++17 -arch=sm_90 -Isrc -c "$cu" -o "$out/$(basename "$cu").o"; then
    echo "ok   $cu"
  else
    echo "FAIL $cu"
    failed=$((failed + 1))
  fi
done
[ "$failed" = 0 ] || { echo "cuda-check: failed (FAIL lines above)"; exit 1; }
echo "cuda-check: all compiled"
