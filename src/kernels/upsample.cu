// upsample.cu — see upsample.h. One thread per 8 consecutive input elements, grid-stride.
#include "kernels/upsample.h"
#include "kernels/vec_io.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace rar::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 16;

// Channels-last: the 8 channels at input pixel p = (n·H + r)·W + c go to output pixels
// (2r+dy, 2c+dx) of image n, i.e. output pixel 4·(n·H + r)·W + 2c + dx (+ 2W for dy = 1). Index
// math in 32 bits (the launcher checks the element count).
template <typename T>
__global__ void __launch_bounds__(kThreads) up2_nhwc(const T* __restrict__ x, uint32_t total, uint32_t W,
                                                     uint32_t C8, T* __restrict__ y) {
  const uint32_t C = 8 * C8;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t p = i / C8, cc = i - p * C8;
    const uint32_t nr = p / W, c = p - nr * W;
    float v[8];
    load8(x + static_cast<int64_t>(p) * C + 8 * cc, v);
    T* o = y + (4 * static_cast<int64_t>(nr) * W + 2 * c) * C + 8 * cc;
    store8(o, v);
    store8(o + C, v);
    store8(o + 2 * static_cast<int64_t>(W) * C, v);
    store8(o + 2 * static_cast<int64_t>(W) * C + C, v);
  }
}

// NCHW: input elements (row pr = plane·H + r, columns 8k..8k+7) become output columns 16k..16k+15
// of output rows 2·pr and 2·pr + 1.
template <typename T>
__global__ void __launch_bounds__(kThreads) up2_nchw(const T* __restrict__ x, uint32_t total, uint32_t W,
                                                     T* __restrict__ y) {
  const uint32_t W8 = W / 8;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t pr = i / W8, k = i - pr * W8;
    float v[8], a[8], b[8];
    load8(x + static_cast<int64_t>(pr) * W + 8 * k, v);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      a[2 * j] = a[2 * j + 1] = v[j];
      b[2 * j] = b[2 * j + 1] = v[4 + j];
    }
    T* o = y + 4 * static_cast<int64_t>(pr) * W + 16 * k;
    store8(o, a);
    store8(o + 8, b);
    store8(o + 2 * W, a);
    store8(o + 2 * W + 8, b);
  }
}

unsigned blocks_for(int64_t total) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (total + kThreads - 1) / kThreads)));
}

}  // namespace

bool upsample_nearest2x_supported(int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last, const void* x,
                                  const void* y) {
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  return aligned && (channels_last ? C % 8 == 0 : W % 8 == 0) && N * C * H * W / 8 < (int64_t{1} << 31);
}

void upsample_nearest2x(DType t, const void* x, int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last,
                        void* y, cudaStream_t stream) {
  if (!upsample_nearest2x_supported(N, C, H, W, channels_last, x, y))
    throw std::runtime_error("upsample_nearest2x: unaligned tensors, " + std::string(channels_last ? "C" : "W") +
                             " not a multiple of 8, or more than 2^34 elements");
  const auto total = static_cast<uint32_t>(N * C * H * W / 8);
  if (total == 0) return;
  auto go = [&](auto tag) {
    using T = decltype(tag);
    if (channels_last)
      up2_nhwc<T><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const T*>(x), total, static_cast<uint32_t>(W),
                                                               static_cast<uint32_t>(C / 8), static_cast<T*>(y));
    else
      up2_nchw<T><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const T*>(x), total, static_cast<uint32_t>(W),
                                                               static_cast<T*>(y));
  };
  if (t == DType::bf16)
    go(__nv_bfloat16{});
  else
    go(float{});
  const auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("upsample_nearest2x: ") + cudaGetErrorString(err));
}

}  // namespace rar::kernels
