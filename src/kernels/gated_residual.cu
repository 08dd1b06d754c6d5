// gated_residual.cu — the backward of the gated residual x + gate·y (declared in block_kernels.h).
#include "kernels/block_common.cuh"

namespace rar::kernels {
namespace {

// ---------------------------------------------------------------- gate + residual

template <typename TX, typename T>
__global__ void gated_residual_bwd(const TX* __restrict__ g, const T* __restrict__ gate, int64_t gate_stride,
                                   const T* __restrict__ y, int64_t rows, int H, T* __restrict__ ggate,
                                   T* __restrict__ gy) {
  const int64_t n = rows * H;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / H;
    const int c = static_cast<int>(i - r * H);
    const float gv = to_f(g[i]);
    ggate[i] = from_f<T>(gv * to_f(y[i]));
    gy[i] = from_f<T>(gv * to_f(gate[r * gate_stride + c]));
  }
}

// Four elements per thread (H % 4 == 0, aligned).
template <typename TX, typename T>
__global__ void gated_residual_bwd4(const TX* __restrict__ g, const T* __restrict__ gate, int64_t gate_stride,
                                    const T* __restrict__ y, int64_t rows, int H, T* __restrict__ ggate,
                                    T* __restrict__ gy) {
  const int64_t n4 = rows * H / 4;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = 4 * i, r = e / H;
    const int c = static_cast<int>(e - r * H);
    float gv[4], yv[4], tv[4], a[4], o[4];
    load4(g + e, gv);
    load4(y + e, yv);
    load4(gate + r * gate_stride + c, tv);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      a[j] = gv[j] * yv[j];
      o[j] = gv[j] * tv[j];
    }
    store4(ggate + e, a);
    store4(gy + e, o);
  }
}


}  // namespace

void gated_residual_backward(DType tx, DType t, const void* g, const void* gate, int64_t gate_stride, const void* y,
                             int64_t rows, int H, void* ggate, void* gy, cudaStream_t stream) {
  const int64_t n = rows * H;
  if (n == 0) return;
  if (vec4_ok(g, H, H, bytes_of(tx)) && vec4_ok(gate, gate_stride, H, bytes_of(t)) && vec4_ok(y, H, H, bytes_of(t)) &&
      vec4_ok(ggate, H, H, bytes_of(t)) && vec4_ok(gy, H, H, bytes_of(t))) {
    const int64_t blocks4 = std::min<int64_t>((n / 4 + kThreads - 1) / kThreads, 132 * 16);
    dispatch2(tx, t, [&](auto tx_, auto t_) {
      using TX = decltype(tx_);
      using T = decltype(t_);
      gated_residual_bwd4<TX, T><<<blocks4, kThreads, 0, stream>>>(
          static_cast<const TX*>(g), static_cast<const T*>(gate), gate_stride, static_cast<const T*>(y), rows, H,
          static_cast<T*>(ggate), static_cast<T*>(gy));
    });
    check_launch("gated_residual_backward");
    return;
  }
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 132 * 16);
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    gated_residual_bwd<TX, T><<<blocks, kThreads, 0, stream>>>(static_cast<const TX*>(g), static_cast<const T*>(gate),
                                                             gate_stride, static_cast<const T*>(y), rows, H,
                                                             static_cast<T*>(ggate), static_cast<T*>(gy));
  });
  check_launch("gated_residual_backward");
}


}  // namespace rar::kernels
