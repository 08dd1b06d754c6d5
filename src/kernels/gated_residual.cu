// gated_residual.cu — the gated residual x + gate·dropout(y), forward and backward (declared in
// block_kernels.h). The dropout mask comes as bits (dropout_bits.cu) and is applied with the plain
// path's roundings, so that the fused and plain paths agree to the last bit of each rounding step.
#include "kernels/block_common.cuh"

namespace rar::kernels {
namespace {

// Element e's dropout: keep → y · scale rounded to T (what dropout's output in T holds), else 0.
template <typename T>
__device__ __forceinline__ float dropped(float y, const uint8_t* bits, int64_t e, float scale) {
  if (!bits) return y;
  return (bits[e >> 3] >> (e & 7) & 1u) ? to_f(from_f<T>(y * scale)) : 0.f;
}
// Its gradient for the branch: round(g · gate) (the residual's gradient of yd, in T), then dropout's.
template <typename T>
__device__ __forceinline__ float dropped_grad(float g_gate, const uint8_t* bits, int64_t e, float scale) {
  const float r = to_f(from_f<T>(g_gate));
  if (!bits) return r;
  return (bits[e >> 3] >> (e & 7) & 1u) ? r * scale : 0.f;
}

// ---------------------------------------------------------------- forward

template <typename TX, typename T>
__global__ void gated_residual_fwd(const TX* __restrict__ x, const T* __restrict__ gate, int64_t gate_stride,
                                   const T* __restrict__ y, const uint8_t* __restrict__ bits, float scale, int64_t rows,
                                   int H, TX* __restrict__ out) {
  const int64_t n = rows * H;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / H;
    const int c = static_cast<int>(i - r * H);
    out[i] = from_f<TX>(to_f(x[i]) + to_f(gate[r * gate_stride + c]) * dropped<T>(to_f(y[i]), bits, i, scale));
  }
}

// Four elements per thread (H % 4 == 0, aligned): one byte of bits covers two threads' elements.
template <typename TX, typename T>
__global__ void gated_residual_fwd4(const TX* __restrict__ x, const T* __restrict__ gate, int64_t gate_stride,
                                    const T* __restrict__ y, const uint8_t* __restrict__ bits, float scale,
                                    int64_t rows, int H, TX* __restrict__ out) {
  const int64_t n4 = rows * H / 4;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = 4 * i, r = e / H;
    const int c = static_cast<int>(e - r * H);
    float xv[4], yv[4], tv[4], o[4];
    load4(x + e, xv);
    load4(y + e, yv);
    load4(gate + r * gate_stride + c, tv);
#pragma unroll
    for (int j = 0; j < 4; ++j) o[j] = xv[j] + tv[j] * dropped<T>(yv[j], bits, e + j, scale);
    store4(out + e, o);
  }
}

// ---------------------------------------------------------------- backward

template <typename TX, typename T>
__global__ void gated_residual_bwd(const TX* __restrict__ g, const T* __restrict__ gate, int64_t gate_stride,
                                   const T* __restrict__ y, const uint8_t* __restrict__ bits, float scale, int64_t rows,
                                   int H, T* __restrict__ ggate, T* __restrict__ gy) {
  const int64_t n = rows * H;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / H;
    const int c = static_cast<int>(i - r * H);
    const float gv = to_f(g[i]);
    ggate[i] = from_f<T>(gv * dropped<T>(to_f(y[i]), bits, i, scale));
    gy[i] = from_f<T>(dropped_grad<T>(gv * to_f(gate[r * gate_stride + c]), bits, i, scale));
  }
}

// Four elements per thread (H % 4 == 0, aligned).
template <typename TX, typename T>
__global__ void gated_residual_bwd4(const TX* __restrict__ g, const T* __restrict__ gate, int64_t gate_stride,
                                    const T* __restrict__ y, const uint8_t* __restrict__ bits, float scale,
                                    int64_t rows, int H, T* __restrict__ ggate, T* __restrict__ gy) {
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
      a[j] = gv[j] * dropped<T>(yv[j], bits, e + j, scale);
      o[j] = dropped_grad<T>(gv[j] * tv[j], bits, e + j, scale);
    }
    store4(ggate + e, a);
    store4(gy + e, o);
  }
}

int64_t elementwise_blocks(int64_t work) {
  return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, 132 * 16));
}

}  // namespace

void gated_residual_forward(DType tx, DType t, const void* x, const void* gate, int64_t gate_stride, const void* y,
                            const uint8_t* bits, float scale, int64_t rows, int H, void* out, cudaStream_t stream) {
  const int64_t n = rows * H;
  if (n == 0) return;
  const bool vec = vec4_ok(x, H, H, bytes_of(tx)) && vec4_ok(gate, gate_stride, H, bytes_of(t)) &&
                   vec4_ok(y, H, H, bytes_of(t)) && vec4_ok(out, H, H, bytes_of(tx));
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    if (vec)
      gated_residual_fwd4<TX, T><<<elementwise_blocks(n / 4), kThreads, 0, stream>>>(
          static_cast<const TX*>(x), static_cast<const T*>(gate), gate_stride, static_cast<const T*>(y), bits, scale,
          rows, H, static_cast<TX*>(out));
    else
      gated_residual_fwd<TX, T><<<elementwise_blocks(n), kThreads, 0, stream>>>(
          static_cast<const TX*>(x), static_cast<const T*>(gate), gate_stride, static_cast<const T*>(y), bits, scale,
          rows, H, static_cast<TX*>(out));
  });
  check_launch("gated_residual_forward");
}

void gated_residual_backward(DType tx, DType t, const void* g, const void* gate, int64_t gate_stride, const void* y,
                             const uint8_t* bits, float scale, int64_t rows, int H, void* ggate, void* gy,
                             cudaStream_t stream) {
  const int64_t n = rows * H;
  if (n == 0) return;
  const bool vec = vec4_ok(g, H, H, bytes_of(tx)) && vec4_ok(gate, gate_stride, H, bytes_of(t)) &&
                   vec4_ok(y, H, H, bytes_of(t)) && vec4_ok(ggate, H, H, bytes_of(t)) && vec4_ok(gy, H, H, bytes_of(t));
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    if (vec)
      gated_residual_bwd4<TX, T><<<elementwise_blocks(n / 4), kThreads, 0, stream>>>(
          static_cast<const TX*>(g), static_cast<const T*>(gate), gate_stride, static_cast<const T*>(y), bits, scale,
          rows, H, static_cast<T*>(ggate), static_cast<T*>(gy));
    else
      gated_residual_bwd<TX, T><<<elementwise_blocks(n), kThreads, 0, stream>>>(
          static_cast<const TX*>(g), static_cast<const T*>(gate), gate_stride, static_cast<const T*>(y), bits, scale,
          rows, H, static_cast<T*>(ggate), static_cast<T*>(gy));
  });
  check_launch("gated_residual_backward");
}

}  // namespace rar::kernels
