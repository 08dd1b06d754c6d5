// gelu_dropout.cu — GELU + dropout of the MLP, the mask as bits (dropout_bits.cu; declared in block_kernels.h).
#include "kernels/block_common.cuh"

namespace rar::kernels {
namespace {

// ---------------------------------------------------------------- GELU + dropout (MLP)

// Exact GELU (erf) as LibTorch computes it (float math): GELU(x) = x·Φ(x), Φ(x) = (1 + erf(x/√2))/2.
// x·Φ(x) equals LibTorch's 0.5·x·(1 + erf) bit for bit (the halving is exact either way).
__device__ __forceinline__ float gelu_cdf(float x) { return 0.5f * (1.f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_pdf(float x) { return expf(-0.5f * x * x) * 0.39894228040143268f; }  // 1/sqrt(2π)

// Eight elements a thread: a = GELU(u) · keep · scale (bits null: keep all), one byte of bits.
template <typename T>
__global__ void gelu_dropout_fwd8(const T* __restrict__ u, const uint8_t* __restrict__ bits, float scale,
                                  int64_t groups, T* __restrict__ a) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < groups;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8], o[8];
    load8(u + 8 * i, v);
    const unsigned m = bits ? bits[i] : 0xffu;
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = (m >> j & 1u) ? v[j] * gelu_cdf(v[j]) * scale : 0.f;
    store8(a + 8 * i, o);
  }
}

// Backward with the forward recomputed: g (the gradient of a) is replaced by the gradient of u, and
// a is written again for the next matmul's weight gradient (a null: not written — an fp8 product
// keeps its own copy of a). One erf per element serves both.
template <typename T>
__global__ void gelu_dropout_bwd8(const T* __restrict__ u, const uint8_t* __restrict__ bits, float scale,
                                  int64_t groups, T* __restrict__ g, T* __restrict__ a) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < groups;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8], gv[8], o[8], gu[8];
    load8(u + 8 * i, v);
    load8(g + 8 * i, gv);
    const unsigned m = bits ? bits[i] : 0xffu;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const bool keep = m >> j & 1u;
      const float cdf = gelu_cdf(v[j]);
      o[j] = keep ? v[j] * cdf * scale : 0.f;
      gu[j] = keep ? gv[j] * scale * (cdf + v[j] * gelu_pdf(v[j])) : 0.f;
    }
    if (a) store8(a + 8 * i, o);
    store8(g + 8 * i, gu);
  }
}

}  // namespace

bool gelu_dropout_supported(DType t, const void* u, int64_t n) { return n % 8 == 0 && aligned(u, 16); }

namespace {
int64_t elementwise_blocks(int64_t work) { return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, 132 * 16)); }
}  // namespace

void gelu_dropout_forward(DType t, const void* u, const uint8_t* bits, float scale, int64_t n, void* a,
                          cudaStream_t stream) {
  if (n == 0) return;
  if (!gelu_dropout_supported(t, u, n) || !aligned(a, 16))
    throw std::runtime_error("gelu_dropout_forward: needs a multiple of 8 elements and aligned buffers");
  dispatch2(t, t, [&](auto, auto t_) {
    using T = decltype(t_);
    gelu_dropout_fwd8<T><<<elementwise_blocks(n / 8), kThreads, 0, stream>>>(static_cast<const T*>(u), bits, scale,
                                                                          n / 8, static_cast<T*>(a));
  });
  check_launch("gelu_dropout_forward");
}

void gelu_dropout_backward(DType t, const void* u, const uint8_t* bits, float scale, int64_t n, void* g, void* a,
                           cudaStream_t stream) {
  if (n == 0) return;
  if (!gelu_dropout_supported(t, u, n) || !aligned(g, 16) || (a && !aligned(a, 16)))
    throw std::runtime_error("gelu_dropout_backward: needs a multiple of 8 elements and aligned buffers");
  dispatch2(t, t, [&](auto, auto t_) {
    using T = decltype(t_);
    gelu_dropout_bwd8<T><<<elementwise_blocks(n / 8), kThreads, 0, stream>>>(static_cast<const T*>(u), bits, scale,
                                                                          n / 8, static_cast<T*>(g), static_cast<T*>(a));
  });
  check_launch("gelu_dropout_backward");
}

}  // namespace rar::kernels
