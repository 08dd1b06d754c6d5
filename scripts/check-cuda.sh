#!/usr/bin/env bash
# make cuda-check — compiles what only the CUDA build compiles (the host code in the cuda/ folders:
# model/ops/cuda, util/cuda; any source testing RAR_WITH_CUDA; the kernels in src/kernels/)
# on a machine without a GPU: the CUDA toolkit (nvcc) and LibTorch's headers are enough to catch
# compile errors before a GPU-machine call. Nothing is linked or run.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
command -v "$CUDA_HOME/bin/nvcc" >/dev/null || { echo "cuda-check: no nvcc in $CUDA_HOME/bin (set CUDA_HOME)"; exit 1; }
T=.deps/libtorch/include
FLAGS=(-std=gnu++17 -DRAR_WITH_CUDA=1 -D_GLIBCXX_USE_CXX11_ABI=1 -Isrc -isystem "$T"
       -isystem "$T/torch/csrc/api/include" -isystem "$CUDA_HOME/include" -isystem /usr/include/libpng16)
hosts=$( (ls src/*/cuda/*.cpp src/*/*/cuda/*.cpp 2>/dev/null; grep -rl RAR_WITH_CUDA src --include=*.cpp || true) | sort -u)
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
printf '%s\n' $hosts | xargs -P "$(nproc)" -I{} sh -c 'g++ "$@" -fsyntax-only {} && echo "ok   {}"' _ "${FLAGS[@]}"
failed=0
for cu in src/kernels/*.cu; do
  # (an `&&` list's failure does not stop a `set -e` script: count it)
  if "$CUDA_HOME/bin/nvcc" -std=c++17 -arch=sm_90 -Isrc -c "$cu" -o "$out/$(basename "$cu").o"; then
    echo "ok   $cu"
  else
    echo "FAIL $cu"
    failed=$((failed + 1))
  fi
done
[ "$failed" = 0 ] || { echo "cuda-check: $failed kernel file(s) failed to compile"; exit 1; }
echo "cuda-check: all compiled"
