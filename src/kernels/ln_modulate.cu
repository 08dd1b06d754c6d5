// ln_modulate.cu — LayerNorm + adaLN modulation, forward and backward, and the inference pass that adds a gated residual and normalises in one read (declared in block_kernels.h).
#include "kernels/block_common.cuh"

namespace rar::kernels {
namespace {

// ---------------------------------------------------------------- LayerNorm + modulation

// The backward's optional gx_add: the gradient the residual stream's other use (the gated residual)
// sends to x, added here instead of by autograd in a pass of its own. The norm's gradient is rounded
// to TX first, so the sum is the one autograd forms from the two rounded gradients, bit for bit.
template <typename TX>
__device__ __forceinline__ TX with_residual(float g, const TX* __restrict__ gx_add, int64_t i) {
  return gx_add ? from_f<TX>(to_f(from_f<TX>(g)) + to_f(gx_add[i])) : from_f<TX>(g);
}
template <int N, typename TX>
__device__ __forceinline__ void add_residual(float o[N], const TX* __restrict__ gx_add) {
  float r[N];
  if constexpr (N == 8) load8(gx_add, r);
  else load4(gx_add, r);
#pragma unroll
  for (int j = 0; j < N; ++j) o[j] = to_f(from_f<TX>(o[j])) + r[j];
}

template <typename TX, typename T, int K>
__global__ void ln_modulate_fwd(const TX* __restrict__ x, int64_t rows, int H, const float* __restrict__ w,
                                const float* __restrict__ b, const T* __restrict__ shift, int64_t shift_stride,
                                const T* __restrict__ scale, int64_t scale_stride, float eps, T* __restrict__ y,
                                float* __restrict__ mean, float* __restrict__ rstd) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);  // see row_grid
  if (row >= rows) return;
  float v[K], mu, rs;
  load_row_stats<TX, K>(x + row * H, H, lane, eps, v, mu, rs);
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
                                int64_t rows, int H, TX* __restrict__ gx, const TX* __restrict__ gx_add,
                                T* __restrict__ gscale, float* __restrict__ gw_part, float* __restrict__ gb_part,
                                int64_t nwarps) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (warp >= nwarps) return;  // nwarps: the partial rows the caller allocated
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
        gxr[c] = with_residual(rs * (gh - s1 - xh[k] * s2), gx_add, row * H + c);
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

// Vectorised variants: lane l handles the groups of four columns 4·(l + 32g), g < G (H % 4 == 0 and
// aligned rows; the launchers check and otherwise take the kernels above).
template <typename TX, typename T, int G>
__global__ void ln_modulate_fwd4(const TX* __restrict__ x, int64_t rows, int H, const float* __restrict__ w,
                                 const float* __restrict__ b, const T* __restrict__ shift, int64_t shift_stride,
                                 const T* __restrict__ scale, int64_t scale_stride, float eps, T* __restrict__ y,
                                 float* __restrict__ mean, float* __restrict__ rstd,
                                 const T* __restrict__ gate = nullptr, int64_t gate_stride = 0,
                                 const T* __restrict__ ya = nullptr, TX* __restrict__ x_out = nullptr) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);  // see row_grid
  if (row >= rows) return;
  const TX* xr = x + row * H;
  float v[G][4];
  float s = 0.f;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const int c = 4 * (lane + 32 * g);
    if (c < H) {
      load4(xr + c, v[g]);
      if (gate) {  // the gated residual first: x_out = x + gate·ya, in x's precision
        float gv[4], av[4];
        load4(gate + row * gate_stride + c, gv);
        load4(ya + row * H + c, av);
#pragma unroll
        for (int j = 0; j < 4; ++j) v[g][j] = to_f(from_f<TX>(v[g][j] + gv[j] * av[j]));
        store4(x_out + row * H + c, v[g]);
      }
      s += (v[g][0] + v[g][1]) + (v[g][2] + v[g][3]);
    } else {
      v[g][0] = v[g][1] = v[g][2] = v[g][3] = 0.f;
    }
  }
  const float mu = warp_sum(s) / H;
  float q = 0.f;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (4 * (lane + 32 * g) < H) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float d = v[g][j] - mu;
        q += d * d;
      }
    }
  }
  const float rs = rsqrtf(warp_sum(q) / H + eps);
  if (lane == 0 && mean) {
    mean[row] = mu;
    rstd[row] = rs;
  }
  const T* sh = shift + row * shift_stride;
  const T* sc = scale + row * scale_stride;
  T* yr = y + row * H;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const int c = 4 * (lane + 32 * g);
    if (c < H) {
      float shv[4], scv[4], wv[4], bv[4], o[4];
      load4(sh + c, shv);
      load4(sc + c, scv);
      if (w) {
        load4(w + c, wv);
        load4(b + c, bv);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float n = (v[g][j] - mu) * rs;
        if (w) n = n * wv[j] + bv[j];
        o[j] = n * (1.f + scv[j]) + shv[j];
      }
      store4(yr + c, o);
    }
  }
}

// Block-per-row variant (the default where rows allow it: H % 8 == 0, H <= 8192, 16-byte aligned
// rows): thread i owns columns 8i..8i+7 and issues every load it needs (x, gate, ya, shift, scale,
// w, b: one 16-byte access each for bf16) before any arithmetic; the two sums go through shared
// memory. A decode step has only 2·batch rows: one warp per row (above) leaves most SMs with a few
// warps, each waiting out a chain of dependent loads (bench/RESULTS.md, "Sampling", has the times).
// Same arithmetic as ln_modulate_fwd4 (residual rounded to TX, two-pass statistics in float).
template <int Slot>
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[32];  // one array per call site (Slot): no barrier needed before reuse
  v = warp_sum(v);
  const int lane = threadIdx.x & 31;
  if (lane == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  return warp_sum(lane < static_cast<int>(blockDim.x >> 5) ? part[lane] : 0.f);
}

template <typename TX, typename T>
__global__ void ln_modulate_fwd_rows(const TX* __restrict__ x, int H, const float* __restrict__ w,
                                     const float* __restrict__ b, const T* __restrict__ shift, int64_t shift_stride,
                                     const T* __restrict__ scale, int64_t scale_stride, float eps, T* __restrict__ y,
                                     float* __restrict__ mean, float* __restrict__ rstd, const T* __restrict__ gate,
                                     int64_t gate_stride, const T* __restrict__ ya, TX* __restrict__ x_out) {
  const int64_t row = blockIdx.x;
  const int c = 8 * threadIdx.x;
  const bool on = c < H;  // blockDim is H/8 rounded up to whole warps
  float v[8] = {}, sh[8] = {}, sc[8] = {}, gv[8] = {}, av[8] = {}, wv[8] = {}, bv[8] = {};
  if (on) {
    load8(x + row * H + c, v);
    if (gate) {
      load8(gate + row * gate_stride + c, gv);
      load8(ya + row * H + c, av);
    }
    load8(shift + row * shift_stride + c, sh);
    load8(scale + row * scale_stride + c, sc);
    if (w) {
      load8(w + c, wv);
      load8(b + c, bv);
    }
    if (gate) {  // the gated residual first: x_out = x + gate·ya, in x's precision
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = to_f(from_f<TX>(v[j] + gv[j] * av[j]));
      store8(x_out + row * H + c, v);
    }
  }
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) s += v[j];
  const float mu = block_sum<0>(s) / H;
  float q = 0.f;
  if (on) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float d = v[j] - mu;
      q += d * d;
    }
  }
  const float rs = rsqrtf(block_sum<1>(q) / H + eps);
  if (threadIdx.x == 0 && mean) {
    mean[row] = mu;
    rstd[row] = rs;
  }
  if (on) {
    float o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float n = (v[j] - mu) * rs;
      if (w) n = n * wv[j] + bv[j];
      o[j] = n * (1.f + sc[j]) + sh[j];
    }
    store8(y + row * H + c, o);
  }
}

template <typename TX, typename T, int G>
__global__ void ln_modulate_bwd4(const T* __restrict__ gy, const TX* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ rstd, const float* __restrict__ w,
                                 const float* __restrict__ b, const T* __restrict__ scale, int64_t scale_stride,
                                 int64_t rows, int H, TX* __restrict__ gx, const TX* __restrict__ gx_add,
                                 T* __restrict__ gscale, float* __restrict__ gw_part, float* __restrict__ gb_part,
                                 int64_t nwarps) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (warp >= nwarps) return;  // nwarps: the partial rows the caller allocated
  float aw[G][4], ab[G][4];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int j = 0; j < 4; ++j) aw[g][j] = ab[g][j] = 0.f;
  for (int64_t row = warp; row < rows; row += nwarps) {
    const TX* xr = x + row * H;
    const T* gr = gy + row * H;
    const T* sc = scale + row * scale_stride;
    const float mu = mean[row], rs = rstd[row];
    float xh[G][4];  // the gradient of xhat is recomputed in the second loop (cached re-reads)
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const int c = 4 * (lane + 32 * g);
#pragma unroll
      for (int j = 0; j < 4; ++j) xh[g][j] = 0.f;
      if (c < H) {
        float xv[4], gv[4], scv[4], wv[4], bv[4], gs[4];
        load4(xr + c, xv);
        load4(gr + c, gv);
        load4(sc + c, scv);
        if (w) {
          load4(w + c, wv);
          load4(b + c, bv);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float xhat = (xv[j] - mu) * rs;
          const float xn = w ? xhat * wv[j] + bv[j] : xhat;
          gs[j] = gv[j] * xn;
          const float gn = gv[j] * (1.f + scv[j]);
          aw[g][j] += gn * xhat;
          ab[g][j] += gn;
          xh[g][j] = xhat;
          const float gh = w ? gn * wv[j] : gn;
          s1 += gh;
          s2 += gh * xhat;
        }
        store4(gscale + row * H + c, gs);
      }
    }
    s1 = warp_sum(s1) / H;
    s2 = warp_sum(s2) / H;
    TX* gxr = gx + row * H;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const int c = 4 * (lane + 32 * g);
      if (c < H) {
        float gv[4], scv[4], wv[4], o[4];
        load4(gr + c, gv);
        load4(sc + c, scv);
        if (w) load4(w + c, wv);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float gn = gv[j] * (1.f + scv[j]);
          const float gh = w ? gn * wv[j] : gn;
          o[j] = rs * (gh - s1 - xh[g][j] * s2);
        }
        if (gx_add) add_residual<4>(o, gx_add + row * H + c);
        store4(gxr + c, o);
      }
    }
  }
  if (gw_part) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const int c = 4 * (lane + 32 * g);
      if (c < H) {
        store4(gw_part + warp * H + c, aw[g]);
        store4(gb_part + warp * H + c, ab[g]);
      }
    }
  }
}

// Backward, block-per-row-group variant (the default where rows allow it, as ln_modulate_fwd_rows):
// thread i owns columns 8i..8i+7 for every row the block walks (grid-stride), so w and b are read
// once and the affine gradients are eight register sums per thread, written as one partial row per
// block. The warp-per-row kernels above kept 2·H/32 such sums per lane, which capped occupancy
// (bench/RESULTS.md, "Training, third round"). Same arithmetic as ln_modulate_bwd4.
template <typename TX, typename T>
__global__ void __launch_bounds__(1024) ln_modulate_bwd_rows(const T* __restrict__ gy, const TX* __restrict__ x,
                                     const float* __restrict__ mean, const float* __restrict__ rstd,
                                     const float* __restrict__ w, const float* __restrict__ b,
                                     const T* __restrict__ scale, int64_t scale_stride, int64_t rows, int H,
                                     TX* __restrict__ gx, const TX* __restrict__ gx_add, T* __restrict__ gscale,
                                     float* __restrict__ gw_part, float* __restrict__ gb_part) {
  const int c = 8 * threadIdx.x;
  const bool on = c < H;  // blockDim is H/8 rounded up to whole warps
  float wv[8], bv[8], aw[8], ab[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) wv[j] = 1.f, bv[j] = 0.f, aw[j] = ab[j] = 0.f;
  if (on && w) {
    load8(w + c, wv);
    load8(b + c, bv);
  }
  int parity = 0;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x, parity ^= 1) {
    float xv[8] = {}, gv[8] = {}, sc[8] = {};
    if (on) {
      load8(x + row * H + c, xv);
      load8(gy + row * H + c, gv);
      load8(scale + row * scale_stride + c, sc);
    }
    const float mu = mean[row], rs = rstd[row];
    float xh[8], gh[8], gs[8], s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      xh[j] = on ? (xv[j] - mu) * rs : 0.f;
      gs[j] = gv[j] * (xh[j] * wv[j] + bv[j]);
      const float gn = gv[j] * (1.f + sc[j]);  // gradient of the normalised (affine) value
      aw[j] += gn * xh[j];
      ab[j] += gn;
      gh[j] = gn * wv[j];  // gradient of xhat
      s1 += gh[j];
      s2 += gh[j] * xh[j];
    }
    const float2 s = block_sum2(s1, s2, parity);
    if (on) {
      const float m1 = s.x / H, m2 = s.y / H;
      float o[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = rs * (gh[j] - m1 - xh[j] * m2);
      if (gx_add) add_residual<8>(o, gx_add + row * H + c);
      store8(gx + row * H + c, o);
      store8(gscale + row * H + c, gs);
    }
  }
  if (gw_part && on) {
    store8(gw_part + blockIdx.x * static_cast<int64_t>(H) + c, aw);
    store8(gb_part + blockIdx.x * static_cast<int64_t>(H) + c, ab);
  }
}

constexpr int kMaxRowWidth = 8 * 1024;  // ln_modulate_fwd_rows: one thread per 8 columns
unsigned row_threads(int H) { return static_cast<unsigned>((H / 8 + 31) / 32 * 32); }
}  // namespace

void ln_modulate_forward(DType tx, DType t, const void* x, int64_t rows, int H, const float* w, const float* b,
                         const void* shift, int64_t shift_stride, const void* scale, int64_t scale_stride,
                         float eps, void* y, float* mean, float* rstd, cudaStream_t stream) {
  if (rows == 0) return;
  const bool vec = vec4_ok(x, H, H, bytes_of(tx)) && vec4_ok(shift, shift_stride, H, bytes_of(t)) &&
                   vec4_ok(scale, scale_stride, H, bytes_of(t)) && vec4_ok(y, H, H, bytes_of(t)) &&
                   (!w || (aligned(w, 16) && aligned(b, 16)));
  const bool rows8 = H <= kMaxRowWidth && vec8_ok(x, H, H) &&
                     vec8_ok(shift, shift_stride, H) && vec8_ok(scale, scale_stride, H) &&
                     vec8_ok(y, H, H) && (!w || (aligned(w, 16) && aligned(b, 16)));
  const RowGrid grid = row_grid(rows);
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    const auto* xp = static_cast<const TX*>(x);
    const auto *sp = static_cast<const T*>(shift), *cp = static_cast<const T*>(scale);
    auto* yp = static_cast<T*>(y);
    if (rows8)
      ln_modulate_fwd_rows<TX, T><<<static_cast<unsigned>(rows), row_threads(H), 0, stream>>>(
          xp, H, w, b, sp, shift_stride, cp, scale_stride, eps, yp, mean, rstd, nullptr, 0, nullptr, nullptr);
    else if (vec)
      dispatch_groups(H, [&](auto g_) {
        ln_modulate_fwd4<TX, T, decltype(g_)::value><<<grid.blocks, grid.threads, 0, stream>>>(
            xp, rows, H, w, b, sp, shift_stride, cp, scale_stride, eps, yp, mean, rstd);
      });
    else
      dispatch_width(H, [&](auto k_) {
        ln_modulate_fwd<TX, T, decltype(k_)::value><<<grid.blocks, grid.threads, 0, stream>>>(
            xp, rows, H, w, b, sp, shift_stride, cp, scale_stride, eps, yp, mean, rstd);
      });
  });
  check_launch("ln_modulate_forward");
}

bool residual_ln_modulate_supported(DType tx, DType t, const void* x, const void* gate, int64_t gate_stride,
                                    const void* ya, const void* shift, int64_t shift_stride, const void* scale,
                                    int64_t scale_stride, const void* x_out, const void* y, int H, const float* w,
                                    const float* b) {
  return H <= kMaxWidth && vec4_ok(x, H, H, bytes_of(tx)) && vec4_ok(x_out, H, H, bytes_of(tx)) &&
         vec4_ok(gate, gate_stride, H, bytes_of(t)) && vec4_ok(ya, H, H, bytes_of(t)) &&
         vec4_ok(shift, shift_stride, H, bytes_of(t)) && vec4_ok(scale, scale_stride, H, bytes_of(t)) &&
         vec4_ok(y, H, H, bytes_of(t)) && (!w || (aligned(w, 16) && aligned(b, 16)));
}

void residual_ln_modulate_forward(DType tx, DType t, const void* x, const void* gate, int64_t gate_stride,
                                  const void* ya, int64_t rows, int H, const float* w, const float* b,
                                  const void* shift, int64_t shift_stride, const void* scale, int64_t scale_stride,
                                  float eps, void* x_out, void* y, cudaStream_t stream) {
  if (rows == 0) return;
  if (!residual_ln_modulate_supported(tx, t, x, gate, gate_stride, ya, shift, shift_stride, scale, scale_stride, x_out,
                                      y, H, w, b))
    throw std::runtime_error("residual_ln_modulate_forward: rows not aligned to 4 elements or H > kMaxWidth");
  const bool rows8 = H <= kMaxRowWidth && vec8_ok(x, H, H) && vec8_ok(x_out, H, H) &&
                     vec8_ok(gate, gate_stride, H) && vec8_ok(ya, H, H) &&
                     vec8_ok(shift, shift_stride, H) && vec8_ok(scale, scale_stride, H) &&
                     vec8_ok(y, H, H);
  const RowGrid grid = row_grid(rows);
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    if (rows8) {
      ln_modulate_fwd_rows<TX, T><<<static_cast<unsigned>(rows), row_threads(H), 0, stream>>>(
          static_cast<const TX*>(x), H, w, b, static_cast<const T*>(shift), shift_stride,
          static_cast<const T*>(scale), scale_stride, eps, static_cast<T*>(y), nullptr, nullptr,
          static_cast<const T*>(gate), gate_stride, static_cast<const T*>(ya), static_cast<TX*>(x_out));
      return;
    }
    dispatch_groups(H, [&](auto g_) {
      ln_modulate_fwd4<TX, T, decltype(g_)::value><<<grid.blocks, grid.threads, 0, stream>>>(
          static_cast<const TX*>(x), rows, H, w, b, static_cast<const T*>(shift), shift_stride,
          static_cast<const T*>(scale), scale_stride, eps, static_cast<T*>(y), nullptr, nullptr,
          static_cast<const T*>(gate), gate_stride, static_cast<const T*>(ya), static_cast<TX*>(x_out));
    });
  });
  check_launch("residual_ln_modulate_forward");
}

int64_t ln_modulate_partial_rows(int64_t rows) { return std::max<int64_t>(1, std::min(rows, kBackwardRowBlocks)); }

void ln_modulate_backward(DType tx, DType t, const void* gy, const void* x, const float* mean, const float* rstd,
                          const float* w, const float* b, const void* scale, int64_t scale_stride, int64_t rows,
                          int H, void* gx, const void* gx_add, void* gscale, float* gw_part, float* gb_part,
                          cudaStream_t stream) {
  if (rows == 0) return;
  const bool affine_ok = !w || (aligned(w, 16) && aligned(b, 16));
  const bool vec = vec4_ok(x, H, H, bytes_of(tx)) && vec4_ok(gy, H, H, bytes_of(t)) &&
                   vec4_ok(scale, scale_stride, H, bytes_of(t)) && vec4_ok(gx, H, H, bytes_of(tx)) &&
                   vec4_ok(gscale, H, H, bytes_of(t)) && affine_ok && (!gx_add || vec4_ok(gx_add, H, H, bytes_of(tx))) &&
                   (!gw_part || (aligned(gw_part, 16) && aligned(gb_part, 16)));
  const bool rows8 = H <= kMaxRowWidth && vec8_ok(x, H, H) && vec8_ok(gy, H, H) &&
                     vec8_ok(scale, scale_stride, H) && vec8_ok(gx, H, H) && vec8_ok(gscale, H, H) && affine_ok &&
                     (!gx_add || vec8_ok(gx_add, H, H)) &&
                     (!gw_part || (vec8_ok(gw_part, H, H) && vec8_ok(gb_part, H, H)));
  // every path writes exactly P partial rows (one per block, resp. per warp)
  const int64_t P = ln_modulate_partial_rows(rows);
  const auto warp_blocks = static_cast<unsigned>((P + kWarps - 1) / kWarps);
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    const auto *gp = static_cast<const T*>(gy), *cp = static_cast<const T*>(scale);
    const auto* xp = static_cast<const TX*>(x);
    auto* gxp = static_cast<TX*>(gx);
    const auto* gap = static_cast<const TX*>(gx_add);
    auto* gsp = static_cast<T*>(gscale);
    if (rows8)
      ln_modulate_bwd_rows<TX, T><<<static_cast<unsigned>(P), row_threads(H), 0, stream>>>(
          gp, xp, mean, rstd, w, b, cp, scale_stride, rows, H, gxp, gap, gsp, gw_part, gb_part);
    else if (vec)
      dispatch_groups(H, [&](auto g_) {
        ln_modulate_bwd4<TX, T, decltype(g_)::value><<<warp_blocks, kThreads, 0, stream>>>(
            gp, xp, mean, rstd, w, b, cp, scale_stride, rows, H, gxp, gap, gsp, gw_part, gb_part, P);
      });
    else
      dispatch_width(H, [&](auto k_) {
        ln_modulate_bwd<TX, T, decltype(k_)::value><<<warp_blocks, kThreads, 0, stream>>>(
            gp, xp, mean, rstd, w, b, cp, scale_stride, rows, H, gxp, gap, gsp, gw_part, gb_part, P);
      });
  });
  check_launch("ln_modulate_backward");
}


}  // namespace rar::kernels
