// block_kernels.cu — see block_kernels.h. One warp per normalised row: each lane keeps its
// ceil(width/32) values in registers (K is a template parameter), so a row is read once; sums are
// warp shuffles. Backward kernels walk rows with a grid-stride loop and write per-warp partial sums
// of the affine gradients (summed by the caller: deterministic, no atomics).
#include "kernels/block_kernels.h"
#include "kernels/vec_io.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace rar::kernels {
namespace {

constexpr int kWarps = 8;  // warps per block
constexpr int kThreads = 32 * kWarps;
constexpr int64_t kMaxBackwardBlocks = 528;  // 4 per SM on an H100/H200

bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

void check_launch(const char* what) {
  auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

int64_t blocks_for(int64_t rows) { return (rows + kWarps - 1) / kWarps; }

// Launch shape of the warp-per-row forward kernels (they find their row from blockDim): kWarps
// warps a block, fewer when that would not give every SM two blocks - a guided decode step's 512
// rows made 64 blocks of 8 warps, leaving half an H200's 132 SMs idle.
struct RowGrid {
  unsigned blocks, threads;
};
RowGrid row_grid(int64_t rows) {
  static const int sms = [] {
    int d = 0, n = 0;
    if (cudaGetDevice(&d) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, d) != cudaSuccess)
      n = 132;
    return n > 0 ? n : 132;
  }();
  int w = kWarps;
  while (w > 1 && (rows + w - 1) / w < 2 * sms) w /= 2;
  return {static_cast<unsigned>((rows + w - 1) / w), static_cast<unsigned>(32 * w)};
}
int64_t backward_blocks(int64_t rows) { return std::max<int64_t>(1, std::min(blocks_for(rows), kMaxBackwardBlocks)); }

// ---------------------------------------------------------------- LayerNorm + modulation

// One warp reads a row of `width` values (lane l holds columns l + 32k, k < K; zeros past the end)
// and computes its mean and 1/sqrt(variance + eps) (two passes over the registers).
template <typename T, int K>
__device__ __forceinline__ void load_row_stats(const T* in, int width, int lane, float eps, float v[K], float& mu,
                                               float& rs) {
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int c = lane + 32 * k;
    v[k] = c < width ? to_f(in[c]) : 0.f;
    s += v[k];
  }
  mu = warp_sum(s) / width;
  float q = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float d = lane + 32 * k < width ? v[k] - mu : 0.f;
    q += d * d;
  }
  rs = rsqrtf(warp_sum(q) / width + eps);
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
// memory. A decode step has only 2·batch rows: one warp per row (above) left most SMs with a few
// warps, each waiting out a chain of dependent loads (11 us per call for rar_xl's 512 rows).
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
                                 int64_t rows, int H, TX* __restrict__ gx, T* __restrict__ gscale,
                                 float* __restrict__ gw_part, float* __restrict__ gb_part) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarps;
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

// ---------------------------------------------------------------- q/k norm + head split

// Row r of qkv [B,N,3,heads,hd] is (bn, which, head) with r = (bn*3 + which)*heads + head.
// Where k and v go: [B,N,heads,hd] like q (slot null), or, for one new position (N = 1), slot
// *slot of a KV cache [B,heads,cap,hd] (the static decode step: the slot index lives on the device).
struct KvDest {
  int64_t cap;
  const int64_t* slot;
  bool fp8;  // the caches hold fp8 (e4m3): k and v are written rounded to bf16, then to fp8
  __device__ int64_t offset(int64_t bn, int head, int heads, int hd, int64_t row_out) const {
    return slot ? ((bn * heads + head) * cap + *slot) * hd : row_out;
  }
};

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
__global__ void qk_norm_fwd(const T* __restrict__ qkv, int64_t rows, int heads, int hd,
                            const float* __restrict__ wq, const float* __restrict__ bq, const float* __restrict__ wk,
                            const float* __restrict__ bk, float eps, T* __restrict__ q, T* __restrict__ k,
                            T* __restrict__ v, float* __restrict__ mean, float* __restrict__ rstd, KvDest dest) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const QkvRow row(r, heads, hd);
  const T* in = qkv + r * hd;
  const int64_t kv_out = dest.offset(row.bn, row.head, heads, hd, row.out);
  if (row.which == 2) {
    for (int c = lane; c < hd; c += 32) v[kv_out + c] = in[c];
    return;
  }
  float val[K], mu, rs;
  load_row_stats<T, K>(in, hd, lane, eps, val, mu, rs);
  if (lane == 0 && mean) {
    mean[row.stat(heads)] = mu;
    rstd[row.stat(heads)] = rs;
  }
  const float* w = row.which == 0 ? wq : wk;
  const float* b = row.which == 0 ? bq : bk;
  T* out = row.which == 0 ? q + row.out : k + kv_out;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int c = lane + 32 * j;
    if (c < hd) out[c] = from_f<T>((val[j] - mu) * rs * w[c] + b[c]);
  }
}

template <typename T, int K>
__global__ void qk_norm_bwd(const T* __restrict__ gq, const T* __restrict__ gk, const T* __restrict__ gv,
                            const T* __restrict__ qkv, const float* __restrict__ mean, const float* __restrict__ rstd,
                            const float* __restrict__ wq, const float* __restrict__ wk, int64_t rows,
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

// Vectorised bf16 variants: L = hd/8 lanes per row, 8 elements (16 bytes) per lane. Rows sit in
// groups of P lanes (P = L rounded up to a power of two; lanes sub >= L idle), 32/P rows per warp,
// so head dims like 48 (L = 6) or 80 (L = 10) vectorise too. Every lane runs every shuffle (rows
// past the end are clamped and not stored).
template <int L, int P>
__global__ void qk_norm_fwd8(const __nv_bfloat16* __restrict__ qkv, int64_t rows, int heads, int hd,
                             const float* __restrict__ wq, const float* __restrict__ bq,
                             const float* __restrict__ wk, const float* __restrict__ bk, float eps,
                             __nv_bfloat16* __restrict__ q, __nv_bfloat16* __restrict__ k,
                             __nv_bfloat16* __restrict__ v, float* __restrict__ mean, float* __restrict__ rstd,
                             KvDest dest) {
  const int lane = threadIdx.x & 31, sub = lane % P;
  const bool active = sub < L;
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5)) * (32 / P) + lane / P;
  const bool valid = r < rows;
  const int64_t rr = valid ? r : rows - 1;
  const QkvRow row(rr, heads, hd);
  const int c = 8 * sub;
  float val[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (active) load8(qkv + rr * hd + c, val);
  float mu, rs;
  group_row_stats8<P>(val, active, hd, eps, mu, rs);
  if (!valid || !active) return;
  const int64_t kv_out = dest.offset(row.bn, row.head, heads, hd, row.out);
  if (row.which == 2) {
    if (dest.fp8)
      store8(reinterpret_cast<__nv_fp8_e4m3*>(v) + kv_out + c, val);
    else
      *reinterpret_cast<uint4*>(v + kv_out + c) = *reinterpret_cast<const uint4*>(qkv + rr * hd + c);
    return;
  }
  if (sub == 0 && mean) {
    mean[row.stat(heads)] = mu;
    rstd[row.stat(heads)] = rs;
  }
  float wv[8], bv[8], o[8];
  load8((row.which == 0 ? wq : wk) + c, wv);
  load8((row.which == 0 ? bq : bk) + c, bv);
#pragma unroll
  for (int j = 0; j < 8; ++j) o[j] = (val[j] - mu) * rs * wv[j] + bv[j];
  if (row.which == 1 && dest.fp8) {
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = __bfloat162float(__float2bfloat16(o[j]));  // as the bf16 path's k
    store8(reinterpret_cast<__nv_fp8_e4m3*>(k) + kv_out + c, o);
    return;
  }
  store8((row.which == 0 ? q + row.out : k + kv_out) + c, o);
}

template <int L, int P>
__global__ void qk_norm_bwd8(const __nv_bfloat16* __restrict__ gq, const __nv_bfloat16* __restrict__ gk,
                             const __nv_bfloat16* __restrict__ gv, const __nv_bfloat16* __restrict__ qkv,
                             const float* __restrict__ mean, const float* __restrict__ rstd,
                             const float* __restrict__ wq, const float* __restrict__ wk, int64_t rows, int heads,
                             int hd, __nv_bfloat16* __restrict__ gqkv, float* __restrict__ part) {
  const int lane = threadIdx.x & 31, sub = lane % P, grp = lane / P;
  const bool active = sub < L;
  constexpr int kRows = 32 / P;  // rows per warp and pass
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * kWarps;
  const int c = 8 * sub;
  float aw0[8], ab0[8], aw1[8], ab1[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) aw0[j] = ab0[j] = aw1[j] = ab1[j] = 0.f;
  for (int64_t base = warp * kRows; base < rows; base += nwarps * kRows) {
    const int64_t r = base + grp;
    const bool valid = r < rows;
    const int64_t rr = valid ? r : rows - 1;
    const QkvRow row(rr, heads, hd);
    const bool norm = row.which != 2;
    float x[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, g[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f},
          wv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (active) {
      load8(qkv + rr * hd + c, x);
      load8((row.which == 0 ? gq : row.which == 1 ? gk : gv) + row.out + c, g);
      load8((row.which == 0 ? wq : wk) + c, wv);
    }
    float mu = 0.f, rs = 1.f;
    if (norm) {
      mu = mean[row.stat(heads)];
      rs = rstd[row.stat(heads)];
    }
    float xh[8], s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      xh[j] = active ? (x[j] - mu) * rs : 0.f;
      const float gh = g[j] * wv[j];
      s1 += gh;
      s2 += gh * xh[j];
    }
    s1 = group_sum<P>(s1) / hd;
    s2 = group_sum<P>(s2) / hd;
    if (!valid || !active) continue;
    float o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = norm ? rs * (g[j] * wv[j] - s1 - xh[j] * s2) : g[j];
    store8(gqkv + rr * hd + c, o);
    if (row.which == 0) {
#pragma unroll
      for (int j = 0; j < 8; ++j) aw0[j] += g[j] * xh[j], ab0[j] += g[j];
    } else if (row.which == 1) {
#pragma unroll
      for (int j = 0; j < 8; ++j) aw1[j] += g[j] * xh[j], ab1[j] += g[j];
    }
  }
  // lanes with the same `sub` hold partials of the same columns: add them up across the groups
#pragma unroll
  for (int o = P; o < 32; o <<= 1) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      aw0[j] += __shfl_xor_sync(0xffffffffu, aw0[j], o);
      ab0[j] += __shfl_xor_sync(0xffffffffu, ab0[j], o);
      aw1[j] += __shfl_xor_sync(0xffffffffu, aw1[j], o);
      ab1[j] += __shfl_xor_sync(0xffffffffu, ab1[j], o);
    }
  }
  if (grp == 0 && active) {
    float* p = part + warp * 4 * hd;  // (wq, bq, wk, bk)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      p[c + j] = aw0[j];
      p[hd + c + j] = ab0[j];
      p[2 * hd + c + j] = aw1[j];
      p[3 * hd + c + j] = ab1[j];
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

// ---------------------------------------------------------------- GELU + dropout (MLP)

// Exact GELU (erf) and its derivative, as LibTorch computes them (float math).
__device__ __forceinline__ float gelu_f(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_grad_f(float x) {
  const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
  const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;  // 1/sqrt(2π)
  return cdf + x * pdf;
}

// Eight bools (bytes 0/1) -> one byte, element j in bit j: each byte's bit lands in the top byte of
// the product at bit 56 + j, and no two partial products overlap (no carries).
__device__ __forceinline__ unsigned pack8(uint2 m) {
  const unsigned long long x = (static_cast<unsigned long long>(m.y) << 32 | m.x) & 0x0101010101010101ull;
  return static_cast<unsigned>((x * 0x0102040810204080ull) >> 56);
}

// Eight elements a thread: a = GELU(u) · keep · scale; the bool mask (null: keep all) packed to bits.
template <typename T>
__global__ void gelu_dropout_fwd8(const T* __restrict__ u, const bool* __restrict__ mask, float scale, int64_t groups,
                                  T* __restrict__ a, uint8_t* __restrict__ bits) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < groups;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8], o[8];
    load8(u + 8 * i, v);
    const unsigned m = mask ? pack8(*reinterpret_cast<const uint2*>(mask + 8 * i)) : 0xffu;
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = (m >> j & 1u) ? gelu_f(v[j]) * scale : 0.f;
    store8(a + 8 * i, o);
    if (bits) bits[i] = static_cast<uint8_t>(m);
  }
}

// Backward with the forward recomputed: g (the gradient of a) is replaced by the gradient of u, and
// a is written again for the next matmul's weight gradient.
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
      o[j] = keep ? gelu_f(v[j]) * scale : 0.f;
      gu[j] = keep ? gv[j] * scale * gelu_grad_f(v[j]) : 0.f;
    }
    store8(a + 8 * i, o);
    store8(g + 8 * i, gu);
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

// Calls f(std::integral_constant<int,V>{}) with the first V of Vs (ascending) that is >= need.
template <int... Vs, typename F>
void dispatch_at_least(int need, int width, F&& f) {
  bool done = false;
  ((done = done || (need <= Vs && (f(std::integral_constant<int, Vs>{}), true))), ...);
  if (!done)
    throw std::runtime_error("block kernels: width " + std::to_string(width) + " > " + std::to_string(kMaxWidth));
}

// K = ceil(width/32) values per lane (per-element kernels), G = ceil(width/128) groups of four.
template <typename F>
void dispatch_width(int width, F&& f) {
  dispatch_at_least<1, 2, 4, 8, 16, 24, 32, 40, 48, 64>((width + 31) / 32, width, f);
}
template <typename F>
void dispatch_groups(int width, F&& f) {
  dispatch_at_least<1, 2, 4, 6, 8, 10, 12, 16>((width + 127) / 128, width, f);
}

// Calls f(integral_constant<L>{}, integral_constant<P>{}) for L = hd/8 lanes per row (hd % 8 == 0,
// L one of the listed counts, P = L rounded up to a power of two); false when hd has no such L.
constexpr int pow2_at_least(int n) { return n <= 1 ? 1 : 2 * pow2_at_least((n + 1) / 2); }
template <int... Ls, typename F>
bool dispatch_lanes_of(int lanes, F&& f) {
  bool done = false;
  ((done = done || (lanes == Ls && (f(std::integral_constant<int, Ls>{},
                                      std::integral_constant<int, pow2_at_least(Ls)>{}),
                                    true))),
   ...);
  return done;
}
template <typename F>
bool dispatch_lanes(int hd, F&& f) {
  // head dims 8..64 every 8, then 80, 88, 96, 128, 256 (rar_b 48, rar_l 64, rar_xl 80, rar_xxl 88)
  return hd % 8 == 0 && dispatch_lanes_of<1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 16, 32>(hd / 8, f);
}

// Rows of `width` elements of `bytes` each starting at p (row stride `stride` elements) can be
// read four elements at a time.
bool vec4_ok(const void* p, int64_t stride, int width, int bytes) {
  return width % 4 == 0 && stride % 4 == 0 && aligned(p, 4 * bytes);
}
int bytes_of(DType t) { return t == DType::f32 ? 4 : 2; }
// ... eight elements (16 bytes for bf16, two 16-byte accesses for float) at a time.
bool vec8_ok(const void* p, int64_t stride, int width) {
  return width % 8 == 0 && stride % 8 == 0 && aligned(p, 16);
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

int64_t ln_modulate_partial_rows(int64_t rows) { return backward_blocks(rows) * kWarps; }

void ln_modulate_backward(DType tx, DType t, const void* gy, const void* x, const float* mean, const float* rstd,
                          const float* w, const float* b, const void* scale, int64_t scale_stride, int64_t rows,
                          int H, void* gx, void* gscale, float* gw_part, float* gb_part, cudaStream_t stream) {
  if (rows == 0) return;
  const bool vec = vec4_ok(x, H, H, bytes_of(tx)) && vec4_ok(gy, H, H, bytes_of(t)) &&
                   vec4_ok(scale, scale_stride, H, bytes_of(t)) && vec4_ok(gx, H, H, bytes_of(tx)) &&
                   vec4_ok(gscale, H, H, bytes_of(t)) && (!w || (aligned(w, 16) && aligned(b, 16))) &&
                   (!gw_part || (aligned(gw_part, 16) && aligned(gb_part, 16)));
  dispatch2(tx, t, [&](auto tx_, auto t_) {
    using TX = decltype(tx_);
    using T = decltype(t_);
    const auto *gp = static_cast<const T*>(gy), *cp = static_cast<const T*>(scale);
    const auto* xp = static_cast<const TX*>(x);
    auto* gxp = static_cast<TX*>(gx);
    auto* gsp = static_cast<T*>(gscale);
    if (vec)
      dispatch_groups(H, [&](auto g_) {
        ln_modulate_bwd4<TX, T, decltype(g_)::value><<<backward_blocks(rows), kThreads, 0, stream>>>(
            gp, xp, mean, rstd, w, b, cp, scale_stride, rows, H, gxp, gsp, gw_part, gb_part);
      });
    else
      dispatch_width(H, [&](auto k_) {
        ln_modulate_bwd<TX, T, decltype(k_)::value><<<backward_blocks(rows), kThreads, 0, stream>>>(
            gp, xp, mean, rstd, w, b, cp, scale_stride, rows, H, gxp, gsp, gw_part, gb_part);
      });
  });
  check_launch("ln_modulate_backward");
}

void qk_norm_split_forward(DType t, const void* qkv, int64_t B, int64_t N, int heads, int hd, const float* wq,
                           const float* bq, const float* wk, const float* bk, float eps, void* q, void* k, void* v,
                           float* mean, float* rstd, cudaStream_t stream, int64_t cache_cap,
                           const int64_t* cache_slot, bool cache_fp8) {
  const int64_t rows = B * N * 3 * heads;
  if (rows == 0) return;
  if (cache_slot && N != 1) throw std::runtime_error("qk_norm_split_forward: a cache slot takes one position (N = 1)");
  if (cache_fp8 && (!cache_slot || !qk_norm_fp8_cache_supported(t, hd)))
    throw std::runtime_error("qk_norm_split_forward: an fp8 cache needs a slot, bf16 input and a vectorised head dim");
  const KvDest dest{cache_cap, cache_slot, cache_fp8};
  if (t == DType::bf16 && aligned(qkv, 16) && aligned(q, 16) && aligned(k, 16) && aligned(v, 16) &&
      aligned(wq, 16) && aligned(bq, 16) && aligned(wk, 16) && aligned(bk, 16) &&
      dispatch_lanes(hd, [&](auto l_, auto p_) {
        constexpr int L = decltype(l_)::value, P = decltype(p_)::value;
        const int64_t per_block = kWarps * (32 / P);
        qk_norm_fwd8<L, P><<<(rows + per_block - 1) / per_block, kThreads, 0, stream>>>(
            static_cast<const __nv_bfloat16*>(qkv), rows, heads, hd, wq, bq, wk, bk, eps,
            static_cast<__nv_bfloat16*>(q), static_cast<__nv_bfloat16*>(k), static_cast<__nv_bfloat16*>(v), mean,
            rstd, dest);
      })) {
    check_launch("qk_norm_split_forward");
    return;
  }
  // (the per-element kernels write k and v in t only)
  if (cache_fp8) throw std::runtime_error("qk_norm_split_forward: an fp8 cache needs 16-byte-aligned rows");
  dispatch2(t == DType::f32 ? DType::f32 : DType::bf16, t, [&](auto, auto t_) {
    using T = decltype(t_);
    dispatch_width(hd, [&](auto k_) {
      qk_norm_fwd<T, decltype(k_)::value><<<blocks_for(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(qkv), rows, heads, hd, wq, bq, wk, bk, eps, static_cast<T*>(q),
          static_cast<T*>(k), static_cast<T*>(v), mean, rstd, dest);
    });
  });
  check_launch("qk_norm_split_forward");
}

bool qk_norm_fp8_cache_supported(DType t, int hd) {
  return t == DType::bf16 && dispatch_lanes(hd, [](auto, auto) {});
}

int64_t qk_norm_partial_rows(int64_t rows) { return backward_blocks(rows) * kWarps; }

void qk_norm_split_backward(DType t, const void* gq, const void* gk, const void* gv, const void* qkv,
                            const float* mean, const float* rstd, const float* wq, const float* wk, int64_t B,
                            int64_t N, int heads, int hd, void* gqkv, float* part, cudaStream_t stream) {
  const int64_t rows = B * N * 3 * heads;
  if (rows == 0) return;
  if (t == DType::bf16 && aligned(gq, 16) && aligned(gk, 16) && aligned(gv, 16) && aligned(qkv, 16) &&
      aligned(wq, 16) && aligned(wk, 16) && aligned(gqkv, 16) &&
      dispatch_lanes(hd, [&](auto l_, auto p_) {
        constexpr int L = decltype(l_)::value, P = decltype(p_)::value;
        qk_norm_bwd8<L, P><<<backward_blocks(rows), kThreads, 0, stream>>>(
            static_cast<const __nv_bfloat16*>(gq), static_cast<const __nv_bfloat16*>(gk),
            static_cast<const __nv_bfloat16*>(gv), static_cast<const __nv_bfloat16*>(qkv), mean, rstd, wq, wk, rows,
            heads, hd, static_cast<__nv_bfloat16*>(gqkv), part);
      })) {
    check_launch("qk_norm_split_backward");
    return;
  }
  dispatch2(t == DType::f32 ? DType::f32 : DType::bf16, t, [&](auto, auto t_) {
    using T = decltype(t_);
    dispatch_width(hd, [&](auto k_) {
      qk_norm_bwd<T, decltype(k_)::value><<<backward_blocks(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(gq), static_cast<const T*>(gk), static_cast<const T*>(gv),
          static_cast<const T*>(qkv), mean, rstd, wq, wk, rows, heads, hd, static_cast<T*>(gqkv), part);
    });
  });
  check_launch("qk_norm_split_backward");
}

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

bool gelu_dropout_supported(DType t, const void* u, int64_t n) { return n % 8 == 0 && aligned(u, 16); }

namespace {
int64_t elementwise_blocks(int64_t work) { return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, 132 * 16)); }
}  // namespace

void gelu_dropout_forward(DType t, const void* u, const bool* mask, float scale, int64_t n, void* a, uint8_t* bits,
                          cudaStream_t stream) {
  if (n == 0) return;
  if (!gelu_dropout_supported(t, u, n) || !aligned(a, 16) || (mask && !aligned(mask, 8)))
    throw std::runtime_error("gelu_dropout_forward: needs a multiple of 8 elements and aligned buffers");
  dispatch2(t, t, [&](auto, auto t_) {
    using T = decltype(t_);
    gelu_dropout_fwd8<T><<<elementwise_blocks(n / 8), kThreads, 0, stream>>>(static_cast<const T*>(u), mask, scale,
                                                                          n / 8, static_cast<T*>(a), bits);
  });
  check_launch("gelu_dropout_forward");
}

void gelu_dropout_backward(DType t, const void* u, const uint8_t* bits, float scale, int64_t n, void* g, void* a,
                           cudaStream_t stream) {
  if (n == 0) return;
  if (!gelu_dropout_supported(t, u, n) || !aligned(g, 16) || !aligned(a, 16))
    throw std::runtime_error("gelu_dropout_backward: needs a multiple of 8 elements and aligned buffers");
  dispatch2(t, t, [&](auto, auto t_) {
    using T = decltype(t_);
    gelu_dropout_bwd8<T><<<elementwise_blocks(n / 8), kThreads, 0, stream>>>(static_cast<const T*>(u), bits, scale,
                                                                          n / 8, static_cast<T*>(g), static_cast<T*>(a));
  });
  check_launch("gelu_dropout_backward");
}

}  // namespace rar::kernels
