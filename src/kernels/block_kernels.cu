// block_kernels.cu — see block_kernels.h. One warp per normalised row: each lane keeps its
// ceil(width/32) values in registers (K is a template parameter), so a row is read once; sums are
// warp shuffles. Backward kernels walk rows with a grid-stride loop and write per-warp partial sums
// of the affine gradients (summed by the caller: deterministic, no atomics).
#include "kernels/block_kernels.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace rar::kernels {
namespace {

constexpr int kWarps = 8;  // warps per block
constexpr int kThreads = 32 * kWarps;
constexpr int64_t kMaxBackwardBlocks = 528;  // 4 per SM on an H100/H200

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

void check_launch(const char* what) {
  auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

int64_t blocks_for(int64_t rows) { return (rows + kWarps - 1) / kWarps; }
int64_t backward_blocks(int64_t rows) { return std::max<int64_t>(1, std::min(blocks_for(rows), kMaxBackwardBlocks)); }

// ---------------------------------------------------------------- LayerNorm + modulation

template <typename TX, typename T, int K>
__global__ void ln_modulate_fwd(const TX* __restrict__ x, int64_t rows, int H, const float* __restrict__ w,
                                const float* __restrict__ b, const T* __restrict__ shift, int64_t shift_stride,
                                const T* __restrict__ scale, int64_t scale_stride, float eps, T* __restrict__ y,
                                float* __restrict__ mean, float* __restrict__ rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const TX* xr = x + row * H;
  float v[K];
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int c = lane + 32 * k;
    v[k] = c < H ? to_f(xr[c]) : 0.f;
    s += v[k];
  }
  const float mu = warp_sum(s) / H;
  float q = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int c = lane + 32 * k;
    const float d = c < H ? v[k] - mu : 0.f;
    q += d * d;
  }
  const float rs = rsqrtf(warp_sum(q) / H + eps);
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
  const T* sh = shift + row * shift_stride;
  const T* sc = scale + row * scale_stride;
  T* yr = y + row * H;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int c = lane + 32 * k;
    if (c < H) {
      float n = (v[k] - mu) * rs;
      if (w) n = n * w[c] + b[c];
      yr[c] = from_f<T>(n * (1.f + to_f(sc[c])) + to_f(sh[c]));
    }
  }
}

template <typename TX, typename T, int K>
__global__ void ln_modulate_bwd(const T* __restrict__ gy, const TX* __restrict__ x, const float* __restrict__ mean,
                                const float* __restrict__ rstd, const float* __restrict__ w,
                                const float* __restrict__ b, const T* __restrict__ scale, int64_t scale_stride,
                                int64_t rows, int H, TX* __restrict__ gx, T* __restrict__ gscale,
                                float* __restrict__ gw_part, float* __restrict__ gb_part) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarps;
  float aw[K], ab[K];
#pragma unroll
  for (int k = 0; k < K; ++k) aw[k] = ab[k] = 0.f;
  for (int64_t row = warp; row < rows; row += nwarps) {
    const TX* xr = x + row * H;
    const T* gr = gy + row * H;
    const T* sc = scale + row * scale_stride;
    const float mu = mean[row], rs = rstd[row];
    float xh[K];  // the gradient of xhat is recomputed in the second loop (cached re-reads, fewer registers)
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int c = lane + 32 * k;
      xh[k] = 0.f;
      if (c < H) {
        const float xhat = (to_f(xr[c]) - mu) * rs;
        const float g = to_f(gr[c]);
        const float xn = w ? xhat * w[c] + b[c] : xhat;
        gscale[row * H + c] = from_f<T>(g * xn);
        const float gn = g * (1.f + to_f(sc[c]));  // gradient of the normalised (affine) value
        aw[k] += gn * xhat;
        ab[k] += gn;
        xh[k] = xhat;
        const float gh = w ? gn * w[c] : gn;  // gradient of xhat
        s1 += gh;
        s2 += gh * xhat;
      }
    }
    s1 = warp_sum(s1) / H;
    s2 = warp_sum(s2) / H;
    TX* gxr = gx + row * H;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int c = lane + 32 * k;
      if (c < H) {
        const float gn = to_f(gr[c]) * (1.f + to_f(sc[c]));
        const float gh = w ? gn * w[c] : gn;
        gxr[c] = from_f<TX>(rs * (gh - s1 - xh[k] * s2));
      }
    }
  }
  if (gw_part) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int c = lane + 32 * k;
      if (c < H) {
        gw_part[warp * H + c] = aw[k];
        gb_part[warp * H + c] = ab[k];
      }
    }
  }
}

// ---------------------------------------------------------------- q/k norm + head split

// Row r of qkv [B,N,3,heads,hd] is (bn, which, head) with r = (bn*3 + which)*heads + head.
struct QkvRow {
  int64_t bn, out;  // out: offset of the row in q/k/v [B,N,heads,hd]
  int which, head;
  __device__ QkvRow(int64_t r, int heads, int hd) {
    bn = r / (3 * heads);
    const int rem = static_cast<int>(r - bn * 3 * heads);
    which = rem / heads;
    head = rem - which * heads;
    out = (bn * heads + head) * hd;
  }
  __device__ int64_t stat(int heads) const { return (bn * 2 + which) * heads + head; }
};

template <typename T, int K>
__global__ void qk_norm_fwd(const T* __restrict__ qkv, int64_t rows, int64_t N, int heads, int hd,
                            const float* __restrict__ wq, const float* __restrict__ bq, const float* __restrict__ wk,
                            const float* __restrict__ bk, float eps, T* __restrict__ q, T* __restrict__ k,
                            T* __restrict__ v, float* __restrict__ mean, float* __restrict__ rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const QkvRow row(r, heads, hd);
  const T* in = qkv + r * hd;
  if (row.which == 2) {
    for (int c = lane; c < hd; c += 32) v[row.out + c] = in[c];
    return;
  }
  float val[K];
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int c = lane + 32 * j;
    val[j] = c < hd ? to_f(in[c]) : 0.f;
    s += val[j];
  }
  const float mu = warp_sum(s) / hd;
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int c = lane + 32 * j;
    const float d = c < hd ? val[j] - mu : 0.f;
    sq += d * d;
  }
  const float rs = rsqrtf(warp_sum(sq) / hd + eps);
  if (lane == 0) {
    mean[row.stat(heads)] = mu;
    rstd[row.stat(heads)] = rs;
  }
  const float* w = row.which == 0 ? wq : wk;
  const float* b = row.which == 0 ? bq : bk;
  T* out = (row.which == 0 ? q : k) + row.out;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int c = lane + 32 * j;
    if (c < hd) out[c] = from_f<T>((val[j] - mu) * rs * w[c] + b[c]);
  }
}

template <typename T, int K>
__global__ void qk_norm_bwd(const T* __restrict__ gq, const T* __restrict__ gk, const T* __restrict__ gv,
                            const T* __restrict__ qkv, const float* __restrict__ mean, const float* __restrict__ rstd,
                            const float* __restrict__ wq, const float* __restrict__ wk, int64_t rows, int64_t N,
                            int heads, int hd, T* __restrict__ gqkv, float* __restrict__ part) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarps;
  float aw[2][K], ab[2][K];
#pragma unroll
  for (int j = 0; j < K; ++j) aw[0][j] = aw[1][j] = ab[0][j] = ab[1][j] = 0.f;
  for (int64_t r = warp; r < rows; r += nwarps) {
    const QkvRow row(r, heads, hd);
    T* gout = gqkv + r * hd;
    if (row.which == 2) {
      for (int c = lane; c < hd; c += 32) gout[c] = gv[row.out + c];
      continue;
    }
    const T* in = qkv + r * hd;
    const T* g = (row.which == 0 ? gq : gk) + row.out;
    const float* w = row.which == 0 ? wq : wk;
    const float mu = mean[row.stat(heads)], rs = rstd[row.stat(heads)];
    float xh[K], gh[K];
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int c = lane + 32 * j;
      xh[j] = gh[j] = 0.f;
      if (c < hd) {
        const float xhat = (to_f(in[c]) - mu) * rs;
        const float gn = to_f(g[c]);
        if (row.which == 0) {
          aw[0][j] += gn * xhat;
          ab[0][j] += gn;
        } else {
          aw[1][j] += gn * xhat;
          ab[1][j] += gn;
        }
        xh[j] = xhat;
        gh[j] = gn * w[c];
        s1 += gh[j];
        s2 += gh[j] * xhat;
      }
    }
    s1 = warp_sum(s1) / hd;
    s2 = warp_sum(s2) / hd;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int c = lane + 32 * j;
      if (c < hd) gout[c] = from_f<T>(rs * (gh[j] - s1 - xh[j] * s2));
    }
  }
  float* p = part + warp * 4 * hd;  // (wq, bq, wk, bk)
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int c = lane + 32 * j;
    if (c < hd) {
      p[c] = aw[0][j];
      p[hd + c] = ab[0][j];
      p[2 * hd + c] = aw[1][j];
      p[3 * hd + c] = ab[1][j];
    }
  }
}

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

// ---------------------------------------------------------------- dispatch

// Calls f(TX{}, T{}) with the element types named by the run-time dtypes.
template <typename F>
void dispatch2(DType tx, DType t, F&& f) {
  if (tx == DType::f32 && t == DType::f32) return f(float{}, float{});
  if (tx == DType::f32 && t == DType::bf16) return f(float{}, __nv_bfloat16{});
  if (tx == DType::bf16 && t == DType::bf16) return f(__nv_bfloat16{}, __nv_bfloat16{});
  throw std::runtime_error("block kernels: unsupported dtype combination");
}

// Calls f(std::integral_constant<int,K>{}) with the smallest instantiated K >= ceil(width/32).
template <typename F>
void dispatch_width(int width, F&& f) {
  const int need = (width + 31) / 32;
  if (need <= 1) return f(std::integral_constant<int, 1>{});
  if (need <= 2) return f(std::integral_constant<int, 2>{});
  if (need <= 4) return f(std::integral_constant<int, 4>{});
  if (need <= 8) return f(std::integral_constant<int, 8>{});
  if (need <= 16) return f(std::integral_constant<int, 16>{});
  if (need <= 24) return f(std::integral_constant<int, 24>{});
  if (need <= 32) return f(std::integral_constant<int, 32>{});
  if (need <= 40) return f(std::integral_constant<int, 40>{});
  if (need <= 48) return f(std::integral_constant<int, 48>{});
  if (need <= 64) return f(std::integral_constant<int, 64>{});
  throw std::runtime_error("block kernels: width " + std::to_string(width) + " > " + std::to_string(kMaxWidth));
}

}  // namespace

void ln_modulate_forward(DType tx, DType t, const void* x, int64_t rows, int H, const float* w, const float* b,
                         const void* shift, int64_t shift_stride, const void* scale, int64_t scale_stride,
                         float eps, void* y, float* mean, float* rstd, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    dispatch_width(H, [&](auto k_) {
      ln_modulate_fwd<TX, T, decltype(k_)::value><<<blocks_for(rows), kThreads, 0, stream>>>(
          static_cast<const TX*>(x), rows, H, w, b, static_cast<const T*>(shift), shift_stride,
          static_cast<const T*>(scale), scale_stride, eps, static_cast<T*>(y), mean, rstd);
    });
  });
  check_launch("ln_modulate_forward");
}

int64_t ln_modulate_partial_rows(int64_t rows) { return backward_blocks(rows) * kWarps; }

void ln_modulate_backward(DType tx, DType t, const void* gy, const void* x, const float* mean, const float* rstd,
                          const float* w, const float* b, const void* scale, int64_t scale_stride, int64_t rows,
                          int H, void* gx, void* gscale, float* gw_part, float* gb_part, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    dispatch_width(H, [&](auto k_) {
      ln_modulate_bwd<TX, T, decltype(k_)::value><<<backward_blocks(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(gy), static_cast<const TX*>(x), mean, rstd, w, b, static_cast<const T*>(scale),
          scale_stride, rows, H, static_cast<TX*>(gx), static_cast<T*>(gscale), gw_part, gb_part);
    });
  });
  check_launch("ln_modulate_backward");
}

void qk_norm_split_forward(DType t, const void* qkv, int64_t B, int64_t N, int heads, int hd, const float* wq,
                           const float* bq, const float* wk, const float* bk, float eps, void* q, void* k, void* v,
                           float* mean, float* rstd, cudaStream_t stream) {
  const int64_t rows = B * N * 3 * heads;
  if (rows == 0) return;
  dispatch2(t == DType::f32 ? DType::f32 : DType::bf16, t, [&](auto, auto t_) {
    using T = decltype(t_);
    dispatch_width(hd, [&](auto k_) {
      qk_norm_fwd<T, decltype(k_)::value><<<blocks_for(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(qkv), rows, N, heads, hd, wq, bq, wk, bk, eps, static_cast<T*>(q),
          static_cast<T*>(k), static_cast<T*>(v), mean, rstd);
    });
  });
  check_launch("qk_norm_split_forward");
}

int64_t qk_norm_partial_rows(int64_t rows) { return backward_blocks(rows) * kWarps; }

void qk_norm_split_backward(DType t, const void* gq, const void* gk, const void* gv, const void* qkv,
                            const float* mean, const float* rstd, const float* wq, const float* wk, int64_t B,
                            int64_t N, int heads, int hd, void* gqkv, float* part, cudaStream_t stream) {
  const int64_t rows = B * N * 3 * heads;
  if (rows == 0) return;
  dispatch2(t == DType::f32 ? DType::f32 : DType::bf16, t, [&](auto, auto t_) {
    using T = decltype(t_);
    dispatch_width(hd, [&](auto k_) {
      qk_norm_bwd<T, decltype(k_)::value><<<backward_blocks(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(gq), static_cast<const T*>(gk), static_cast<const T*>(gv),
          static_cast<const T*>(qkv), mean, rstd, wq, wk, rows, N, heads, hd, static_cast<T*>(gqkv), part);
    });
  });
  check_launch("qk_norm_split_backward");
}

void gated_residual_backward(DType tx, DType t, const void* g, const void* gate, int64_t gate_stride, const void* y,
                             int64_t rows, int H, void* ggate, void* gy, cudaStream_t stream) {
  const int64_t n = rows * H;
  if (n == 0) return;
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
