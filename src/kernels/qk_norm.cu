// qk_norm.cu — q/k LayerNorm per head and the split of the qkv projection into heads (also straight into a KV cache slot, bf16 or fp8) (declared in block_kernels.h).
#include "kernels/block_common.cuh"

namespace rar::kernels {
namespace {

// ---------------------------------------------------------------- q/k norm + head split

constexpr int kMaxPosThreads = 1024, kMaxPosHd = 256;  // qk_norm_bwd_pos: 3H/8 threads, its head dims

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
                            int heads, int hd, T* __restrict__ gqkv, float* __restrict__ part, int64_t nwarps) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (warp >= nwarps) return;  // nwarps: the partial rows the caller allocated
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

// Backward, block per position (the default where hd % 8 == 0 and 3H <= 8192): thread i owns
// columns 8i..8i+7 of the position's [3, heads, hd] qkv row — one (q|k|v, head) each, so its weight
// and bias gradients are eight register sums and w is read once; a head's two sums go through
// shared memory (hd/8 threads each). The warp-per-row kernel this replaced kept the sums for both
// q and k in every lane and walked rows of all three kinds (bench/RESULTS.md, "Training, third
// round"). Blocks walk positions grid-stride; each writes one partial row [4, hd] (wq, bq, wk, bk),
// the heads added up in shared memory in a fixed order (deterministic, like every backward here).
__global__ void __launch_bounds__(kMaxPosThreads) qk_norm_bwd_pos(const __nv_bfloat16* __restrict__ gq, const __nv_bfloat16* __restrict__ gk,
                                const __nv_bfloat16* __restrict__ gv, const __nv_bfloat16* __restrict__ qkv,
                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                const float* __restrict__ wq, const float* __restrict__ wk, int64_t positions,
                                int heads, int hd, __nv_bfloat16* __restrict__ gqkv, float* __restrict__ part) {
  __shared__ float2 sums[2][kMaxPosThreads];
  __shared__ float acc[4 * kMaxPosHd];
  const int H = heads * hd, t = threadIdx.x, c = 8 * t;
  const bool on = c < 3 * H;  // blockDim is 3H/8 rounded up to whole warps
  const int which = on ? c / H : 2, within = c - which * H, head = within / hd, col = within - head * hd;
  const int first = (which * H + head * hd) / 8, lanes = hd / 8;  // this head's threads
  const bool norm = on && which < 2;
  const __nv_bfloat16* g_in = which == 0 ? gq : which == 1 ? gk : gv;
  float wv[8], aw[8], ab[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) wv[j] = 0.f, aw[j] = ab[j] = 0.f;
  if (norm) load8((which == 0 ? wq : wk) + col, wv);
  for (int i = t; i < 4 * hd; i += blockDim.x) acc[i] = 0.f;
  int parity = 0;
  for (int64_t bn = blockIdx.x; bn < positions; bn += gridDim.x, parity ^= 1) {
    float x[8] = {}, g[8] = {};
    if (on) {
      load8(qkv + bn * 3 * H + c, x);
      load8(g_in + bn * H + within, g);
    }
    float mu = 0.f, rs = 1.f;
    if (norm) {
      const int64_t st = (bn * 2 + which) * heads + head;
      mu = mean[st];
      rs = rstd[st];
    }
    float xh[8], s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      xh[j] = (x[j] - mu) * rs;
      const float gh = g[j] * wv[j];
      s1 += gh;
      s2 += gh * xh[j];
    }
    sums[parity][t] = make_float2(s1, s2);
    __syncthreads();  // (parity: the next position's writes never overtake this one's reads)
    if (!on) continue;
    float o[8];
    if (norm) {
      float S1 = 0.f, S2 = 0.f;
      for (int l = 0; l < lanes; ++l) {
        const float2 v = sums[parity][first + l];
        S1 += v.x;
        S2 += v.y;
      }
      S1 /= hd;
      S2 /= hd;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        o[j] = rs * (g[j] * wv[j] - S1 - xh[j] * S2);
        aw[j] += g[j] * xh[j];
        ab[j] += g[j];
      }
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = g[j];
    }
    store8(gqkv + bn * 3 * H + c, o);
  }
  __syncthreads();  // acc's zeros are in place
  // the heads' sums added head by head (a fixed order: the result does not depend on scheduling);
  // within a head each column has one owner for q and one for k
  for (int h = 0; h < heads; ++h) {
    if (norm && head == h) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        acc[2 * which * hd + col + j] += aw[j];
        acc[(2 * which + 1) * hd + col + j] += ab[j];
      }
    }
    __syncthreads();
  }
  for (int i = t; i < 4 * hd; i += blockDim.x) part[blockIdx.x * 4 * static_cast<int64_t>(hd) + i] = acc[i];
}

}  // namespace

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

int64_t qk_norm_partial_rows(int64_t positions) {
  return std::max<int64_t>(1, std::min(positions, kBackwardRowBlocks));
}

void qk_norm_split_backward(DType t, const void* gq, const void* gk, const void* gv, const void* qkv,
                            const float* mean, const float* rstd, const float* wq, const float* wk, int64_t B,
                            int64_t N, int heads, int hd, void* gqkv, float* part, cudaStream_t stream) {
  const int64_t positions = B * N, rows = positions * 3 * heads;
  if (rows == 0) return;
  const int64_t P = qk_norm_partial_rows(positions);  // every path writes exactly P partial rows
  const int threads = (3 * heads * hd / 8 + 31) / 32 * 32;
  if (t == DType::bf16 && hd % 8 == 0 && hd <= kMaxPosHd && threads <= kMaxPosThreads && aligned(gq, 16) &&
      aligned(gk, 16) && aligned(gv, 16) && aligned(qkv, 16) && aligned(wq, 16) && aligned(wk, 16) &&
      aligned(gqkv, 16)) {
    qk_norm_bwd_pos<<<static_cast<unsigned>(P), threads, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(gq), static_cast<const __nv_bfloat16*>(gk),
        static_cast<const __nv_bfloat16*>(gv), static_cast<const __nv_bfloat16*>(qkv), mean, rstd, wq, wk,
        positions, heads, hd, static_cast<__nv_bfloat16*>(gqkv), part);
    check_launch("qk_norm_split_backward");
    return;
  }
  dispatch2(t == DType::f32 ? DType::f32 : DType::bf16, t, [&](auto, auto t_) {
    using T = decltype(t_);
    dispatch_width(hd, [&](auto k_) {
      qk_norm_bwd<T, decltype(k_)::value><<<static_cast<unsigned>((P + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
          static_cast<const T*>(gq), static_cast<const T*>(gk), static_cast<const T*>(gv),
          static_cast<const T*>(qkv), mean, rstd, wq, wk, rows, heads, hd, static_cast<T*>(gqkv), part, P);
    });
  });
  check_launch("qk_norm_split_backward");
}


}  // namespace rar::kernels
