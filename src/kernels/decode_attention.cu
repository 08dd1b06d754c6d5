// decode_attention.cu — see decode_attention.h. Two kernels. `block`: one block of 128 threads per
// (row, head); both passes read the cache in consecutive 16-byte chunks per thread with several
// loads in flight: the scores of the valid keys go to shared memory, a block-wide max and sum give
// the softmax, and the values are summed by groups of hd/8 threads (one 16-byte slice of a value
// row each), whose partial sums are then added in shared memory. Its phases are separated by
// block barriers, and on an H200 it proved latency-bound (an fp8 cache, half the bytes, took as
// long). `warp`: one warp per (row, head), no block barriers (below).
#include "kernels/decode_attention.h"
#include "kernels/vec_io.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace rar::kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Block-wide reductions (every thread gets the result).
template <typename Op>
__device__ float block_reduce(float v, float* red, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r = op(r, red[w]);
  return r;
}

// Keys per score tile: the partial dot products of a tile's 8-element chunks (16 bytes in bf16, 8
// in fp8) sit in shared memory (kTile · hd/8 floats) until each key's chunks are summed.
constexpr int kTile = 256;
// Chunks each thread has in flight at once.
constexpr int kUnroll = 4;

// T: q and out; KT: the caches (T, or fp8 e4m3).
template <typename T, typename KT>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(const T* __restrict__ q, const KT* __restrict__ k,
                                                                    const KT* __restrict__ v,
                                                                    const int64_t* __restrict__ last, int hd,
                                                                    int64_t cap, float scale, T* __restrict__ out) {
  extern __shared__ float smem[];  // scores [cap], then chunk partials [kTile * L] / group outputs
  __shared__ float qs[256];
  __shared__ float red[kWarps];
  const int64_t rh = blockIdx.x;  // row * heads + head
  const int64_t n = *last + 1;
  const int len = static_cast<int>(n < cap ? n : cap);
  const int L = hd / 8;  // 16-byte chunks (8 elements) per key or value row
  float* scores = smem;
  float* part = smem + cap;
  const KT* kp = k + rh * cap * hd;
  const KT* vp = v + rh * cap * hd;
  for (int i = threadIdx.x; i < hd; i += kThreads) qs[i] = to_f(q[rh * hd + i]) * scale;
  __syncthreads();

  // Scores, a tile of keys at a time: the tile's keys are one contiguous run of len·hd elements,
  // read as consecutive 16-byte chunks by consecutive threads (fully coalesced); chunk c belongs to
  // key c / L, columns 8·(c % L)...; the L partial dot products of a key are then summed.
  float mx = -FLT_MAX;
  for (int t0 = 0; t0 < len; t0 += kTile) {
    const int keys = min(kTile, len - t0), chunks = keys * L;
    const KT* kt = kp + static_cast<int64_t>(t0) * hd;
    for (int c0 = threadIdx.x; c0 < chunks; c0 += kUnroll * kThreads) {
      float kv[kUnroll][8];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = c0 + u * kThreads;
        if (c < chunks) load8(kt + 8 * static_cast<int64_t>(c), kv[u]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = c0 + u * kThreads;
        if (c < chunks) {
          const float* qc = qs + 8 * (c % L);
          float acc = 0.f;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc += qc[e] * kv[u][e];
          part[c] = acc;
        }
      }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < keys; j += kThreads) {
      float acc = 0.f;
      for (int p = 0; p < L; ++p) acc += part[j * L + p];
      scores[t0 + j] = acc;
      mx = fmaxf(mx, acc);
    }
    __syncthreads();  // part is reused by the next tile
  }
  mx = block_reduce(mx, red, MaxOp{});
  float sum = 0.f;
  for (int j = threadIdx.x; j < len; j += kThreads) {
    const float e = __expf(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, red, SumOp{});  // its barriers also publish the scores

  // Values: groups of L threads each read one value row (a warp reads consecutive rows, one
  // contiguous run), kUnroll rows in flight per thread; the groups' partial sums are then added.
  const int groups = kThreads / L;
  const int g = threadIdx.x / L, sub = threadIdx.x - g * L;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (g < groups) {
    for (int j0 = g; j0 < len; j0 += kUnroll * groups) {
      float vv[kUnroll][8];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * groups;
        if (j < len) load8(vp + static_cast<int64_t>(j) * hd + 8 * sub, vv[u]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * groups;
        if (j < len) {
          const float p = scores[j];
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[e] += p * vv[u][e];
        }
      }
    }
  }
  float* partial = part;  // [groups][hd]: no tile partials are live any more
  if (g < groups) {
#pragma unroll
    for (int e = 0; e < 8; ++e) partial[g * hd + 8 * sub + e] = acc[e];
  }
  __syncthreads();
  const float inv = 1.f / sum;
  for (int i = threadIdx.x; i < hd; i += kThreads) {
    float o = 0.f;
    for (int gg = 0; gg < groups; ++gg) o += partial[gg * hd + i];
    out[rh * hd + i] = from_f<T>(o * inv);
  }
}

// ---------------------------------------------------------------------------------------------
// The warp variant (bf16 queries; bf16 or fp8 caches; hd = 8·L for the L instantiated below). One
// warp per (row, head), four per block, and no block barrier: the block variant's phases (scores,
// max, sum, values) are each closed by __syncthreads over short, latency-bound blocks, and its time
// did not fall when the fp8 cache halved the bytes. Scores, two ways (kCoalescedScores picks by
// measurement): either each lane owns whole keys (j = lane, lane + 32, ...), issues all L chunk
// loads of its key before converting any and forms the whole dot product itself; or the warp reads
// 32 keys at a time as one contiguous run (lane i: chunks i, i + 32, ...) and adds each key's
// partial sums through shared memory. The warp then takes the max and the sum with shuffles. The
// values are summed by groups of L lanes (a group reads one value row as consecutive chunks; the
// warp's G groups read G consecutive rows), kWarpUnroll rows in flight per lane, and the groups'
// partial sums are added through the warp's shared memory.
constexpr int kWarpsPerBlock = 4;
constexpr int kWarpUnroll = 8;  // value rows in flight per lane (a warp reads only G rows at a time)

template <typename KT>
struct RawChunk;  // eight cache elements as raw bits
template <>
struct RawChunk<__nv_bfloat16> {
  using type = uint4;
};
template <>
struct RawChunk<__nv_fp8_e4m3> {
  using type = uint2;
};

template <typename KT>
__device__ __forceinline__ typename RawChunk<KT>::type load_chunk(const KT* p) {
  return __ldg(reinterpret_cast<const typename RawChunk<KT>::type*>(p));
}

// Stride of one key's L partial dot products in the coalesced score phase: L made odd, so that
// 32 lanes reading key `lane`'s partials hit distinct banks.
__host__ __device__ constexpr int key_partial_stride(int L) { return L % 2 == 1 ? L : L + 1; }
// Scratch floats per warp: the value groups' outputs (at most 256) or, before them, the score
// phase's partial dot products (32 keys x key_partial_stride).
__host__ __device__ constexpr int warp_scratch_floats(int L) {
  return 32 * key_partial_stride(L) > 256 ? 32 * key_partial_stride(L) : 256;
}
// Shared floats per warp: q (8L), the scratch, the scores (cap); rounded up to 4 floats so that
// every warp's q is 16-byte aligned (it is read as float4).
__host__ __device__ constexpr int64_t warp_smem_floats(int L, int64_t cap) {
  return (8 * L + warp_scratch_floats(L) + cap + 3) / 4 * 4;
}

// Which score phase a cache gets, as `rar bench attention` and `rar bench sample` chose on the H200
// (bench/RESULTS.md, "Sampling"): with bf16 keys of 80 or more elements the coalesced phase; with
// fp8 keys (8-byte chunks) the per-lane-key phase (the shared-memory round trip of the partial sums
// costs more than coalescing saves when a warp's lines stay in L1), and so for rar_b's 48-wide
// bf16 keys in the fused decode step.
template <typename KT, int L>
constexpr bool kCoalescedScores = std::is_same<KT, __nv_bfloat16>::value && L >= 10;

template <typename KT>
__device__ __forceinline__ typename RawChunk<KT>::type load_chunk_l2(const KT* p) {
  return __ldcg(reinterpret_cast<const typename RawChunk<KT>::type*>(p));
}

// One (row, head) on one warp, its scaled query already in qs (this warp's shared floats), over
// slots 0..len-1 of kp/vp, unnormalised: the max score `mx_out`, the sum of exp(score - mx)
// `sum_out`, and acc_out[i] = Σ exp(score - mx)·v[i] (HD floats in shared memory; may be `partial`
// itself). An empty range gives mx = -FLT_MAX, sum = 0, acc = 0. With kFresh, slot `fresh` is one
// this kernel itself wrote, read through L2 (__ldcg): the non-coherent path (__ldg) is only for data
// written before the kernel started.
//
// Scores, two ways (kCoalescedScores picks by measurement): either each lane owns whole keys (j =
// lane, lane + 32, ...) and issues all L chunk loads of its key before converting any; or the warp
// reads 32 keys at a time as one contiguous run (lane i: chunks i, i + 32, ...) and adds each key's
// partial sums through shared memory. The values are summed by groups of L lanes (a group reads one
// value row as consecutive chunks; the warp's G groups read G consecutive rows), kWarpUnroll rows in
// flight per lane, and the groups' partial sums are added through shared memory.
template <typename KT, int L, bool kFresh>
__device__ __forceinline__ void attend_part(const float* qs, float* partial, float* scores, const KT* kp,
                                            const KT* vp, int len, int fresh, int lane, float* acc_out, float& mx_out,
                                            float& sum_out) {
  constexpr int HD = 8 * L;
  constexpr int G = 32 / L;
  float mx = -FLT_MAX;
  if constexpr (kCoalescedScores<KT, L>) {
    constexpr int S = key_partial_stride(L);
    for (int base = 0; base < len; base += 32) {
      const int keys = len - base < 32 ? len - base : 32;
      const KT* kb = kp + static_cast<int64_t>(base) * HD;
      typename RawChunk<KT>::type raw[L];
#pragma unroll
      for (int t = 0; t < L; ++t) {
        const int i = lane + 32 * t, key = i / L;
        if (key < keys) raw[t] = kFresh && base + key == fresh ? load_chunk_l2(kb + 8 * i) : load_chunk(kb + 8 * i);
      }
#pragma unroll
      for (int t = 0; t < L; ++t) {
        const int i = lane + 32 * t, key = i / L, c = i - key * L;
        if (key < keys) {
          float f[8];
          unpack8(raw[t], f);
          const float4 q0 = *reinterpret_cast<const float4*>(qs + 8 * c);
          const float4 q1 = *reinterpret_cast<const float4*>(qs + 8 * c + 4);
          partial[key * S + c] = q0.x * f[0] + q0.y * f[1] + q0.z * f[2] + q0.w * f[3] + q1.x * f[4] + q1.y * f[5] +
                                 q1.z * f[6] + q1.w * f[7];
        }
      }
      __syncwarp();
      if (lane < keys) {
        float a = 0.f;
#pragma unroll
        for (int c = 0; c < L; ++c) a += partial[lane * S + c];
        scores[base + lane] = a;
        mx = fmaxf(mx, a);
      }
      __syncwarp();
    }
  } else {
    for (int j = lane; j < len; j += 32) {
      const KT* kr = kp + static_cast<int64_t>(j) * HD;
      typename RawChunk<KT>::type raw[L];
      if (kFresh && j == fresh) {
#pragma unroll
        for (int c = 0; c < L; ++c) raw[c] = load_chunk_l2(kr + 8 * c);
      } else {
#pragma unroll
        for (int c = 0; c < L; ++c) raw[c] = load_chunk(kr + 8 * c);
      }
      float a = 0.f;
#pragma unroll
      for (int c = 0; c < L; ++c) {
        float f[8];
        unpack8(raw[c], f);
        const float4 q0 = *reinterpret_cast<const float4*>(qs + 8 * c);
        const float4 q1 = *reinterpret_cast<const float4*>(qs + 8 * c + 4);
        a += q0.x * f[0] + q0.y * f[1] + q0.z * f[2] + q0.w * f[3] + q1.x * f[4] + q1.y * f[5] + q1.z * f[6] +
             q1.w * f[7];
      }
      scores[j] = a;
      mx = fmaxf(mx, a);
    }
  }
  mx = warp_max(mx);
  float sum = 0.f;
  for (int j = lane; j < len; j += 32) {
    const float e = __expf(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  __syncwarp();
  const int g = lane / L, sub = lane - g * L;
  if (g < G) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int j0 = g; j0 < len; j0 += kWarpUnroll * G) {
      typename RawChunk<KT>::type raw[kWarpUnroll];
#pragma unroll
      for (int u = 0; u < kWarpUnroll; ++u) {
        const int j = j0 + u * G;
        const KT* p = vp + static_cast<int64_t>(j) * HD + 8 * sub;
        if (j < len) raw[u] = kFresh && j == fresh ? load_chunk_l2(p) : load_chunk(p);
      }
#pragma unroll
      for (int u = 0; u < kWarpUnroll; ++u) {
        const int j = j0 + u * G;
        if (j < len) {
          float f[8];
          unpack8(raw[u], f);
          const float pj = scores[j];
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[e] += pj * f[e];
        }
      }
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) partial[g * HD + 8 * sub + e] = acc[e];
  }
  __syncwarp();
  for (int i = lane; i < HD; i += 32) {
    float a = 0.f;
#pragma unroll
    for (int gg = 0; gg < G; ++gg) a += partial[gg * HD + i];
    acc_out[i] = a;
  }
  mx_out = mx;
  sum_out = sum;
}

// attend_part normalised, to o (bf16).
template <typename KT, int L, bool kFresh>
__device__ __forceinline__ void attend_warp(const float* qs, float* partial, float* scores, const KT* kp,
                                            const KT* vp, int len, int fresh, int lane, __nv_bfloat16* o) {
  float mx, sum;
  attend_part<KT, L, kFresh>(qs, partial, scores, kp, vp, len, fresh, lane, partial, mx, sum);
  const float inv = 1.f / sum;
  for (int i = lane; i < 8 * L; i += 32) o[i] = __float2bfloat16(partial[i] * inv);  // each lane its own sums
}

template <typename KT, int L>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    decode_attention_warp_kernel(const __nv_bfloat16* __restrict__ q, const KT* __restrict__ k,
                                 const KT* __restrict__ v, const int64_t* __restrict__ last, int64_t rows,
                                 int64_t cap, float scale, __nv_bfloat16* __restrict__ out) {
  constexpr int HD = 8 * L;
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t rh = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;  // row * heads + head
  if (rh >= rows) return;  // a whole warp; nothing below waits on other warps
  float* qs = smem + warp * warp_smem_floats(L, cap);
  const int64_t n = *last + 1;
  const int len = static_cast<int>(n < cap ? n : cap);
  for (int i = lane; i < HD; i += 32) qs[i] = __bfloat162float(q[rh * HD + i]) * scale;
  __syncwarp();
  attend_warp<KT, L, false>(qs, qs + HD, qs + HD + warp_scratch_floats(L), k + rh * cap * HD, v + rh * cap * HD, len, -1, lane,
                     out + rh * HD);
}

// The same with the step's q/k LayerNorms and cache append in front (qk_norm_fwd8's arithmetic:
// lanes [0, P) normalise q, lanes [P, 2P) k, P = L rounded up to a power of two, the statistics
// through the same group_row_stats8, so q and the cached k and v are bit-identical to the
// two-kernel path). qkv is the
// qkv projection [R, 3, heads, hd]; this position's key and value go to slot *last of the caches,
// then the attention reads that slot through L2 (attend_warp's `fresh`).
__host__ __device__ constexpr int lanes_pow2(int L) { return L <= 1 ? 1 : L <= 2 ? 2 : L <= 4 ? 4 : L <= 8 ? 8 : 16; }

// Where one (row, head) of a decode step reads and writes: the filled slots (this position's is
// `slot` = len - 1), its row of the qkv projection [R, 3, heads, hd], its head's rows of the caches.
template <typename KT, int L>
struct DecodeRowHead {
  int len, slot, h;
  const __nv_bfloat16* row;
  KT *kp, *vp;
  __device__ DecodeRowHead(const __nv_bfloat16* qkv, KT* k, KT* v, const int64_t* last, int64_t rh, int heads,
                           int64_t cap) {
    constexpr int HD = 8 * L;
    const int64_t n = *last + 1;
    len = static_cast<int>(n < cap ? n : cap), slot = len - 1;
    const int64_t r = rh / heads;
    h = static_cast<int>(rh - r * heads);
    row = qkv + r * 3 * heads * HD;
    kp = k + rh * cap * HD;
    vp = v + rh * cap * HD;
  }
};

// One warp's q/k LayerNorms and cache append for one (row, head) — qk_norm_fwd8's arithmetic:
// lanes [0, P) normalise q, lanes [P, 2P) k, P = L rounded up to a power of two, the statistics
// through the same group_row_stats8 — writing the scaled bf16 q to qs and this position's key and
// value (bf16, or rounded to fp8) to slot `slot` of kp/vp. row: this row's qkv projection.
template <typename KT, int L>
__device__ __forceinline__ void norm_and_append(const __nv_bfloat16* row, int heads, int h, const float* wq,
                                                const float* bq, const float* wk, const float* bk, float eps,
                                                float scale, float* qs, KT* kp, KT* vp, int slot, int lane) {
  constexpr int HD = 8 * L, P = lanes_pow2(L);
  static_assert(2 * P <= 32, "q and k normalised side by side");
  const int which = lane / P, sub = lane % P, c = 8 * sub;  // which: 0 q, 1 k, 2-3 idle
  const bool active = which < 2 && sub < L;
  float val[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (active) load8(row + (which * heads + h) * HD + c, val);
  float mu, rs;
  group_row_stats8<P>(val, active, HD, eps, mu, rs);  // as qk_norm_fwd8
  if (active) {
    float wv[8], bv[8], o[8];
    load8((which == 0 ? wq : wk) + c, wv);
    load8((which == 0 ? bq : bk) + c, bv);
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = __bfloat162float(__float2bfloat16((val[j] - mu) * rs * wv[j] + bv[j]));
    if (which == 0) {
#pragma unroll
      for (int j = 0; j < 8; ++j) qs[c + j] = o[j] * scale;  // the bf16 q, scaled
    } else {
      store8(kp + static_cast<int64_t>(slot) * HD + c, o);
    }
  }
  if (lane < L) {  // the value: copied (bf16) or rounded to fp8
    float f[8];
    load8(row + (2 * heads + h) * HD + 8 * lane, f);
    store8(vp + static_cast<int64_t>(slot) * HD + 8 * lane, f);
  }
}

template <typename KT, int L>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    qk_norm_attention_warp_kernel(const __nv_bfloat16* __restrict__ qkv, int heads, const float* __restrict__ wq,
                                  const float* __restrict__ bq, const float* __restrict__ wk,
                                  const float* __restrict__ bk, float eps, KT* k, KT* v,
                                  const int64_t* __restrict__ last, int64_t rows, int64_t cap, float scale,
                                  __nv_bfloat16* __restrict__ out) {
  constexpr int HD = 8 * L;
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t rh = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;  // row * heads + head
  if (rh >= rows) return;
  float* qs = smem + warp * warp_smem_floats(L, cap);
  const DecodeRowHead<KT, L> d(qkv, k, v, last, rh, heads, cap);
  norm_and_append<KT, L>(d.row, heads, d.h, wq, bq, wk, bk, eps, scale, qs, d.kp, d.vp, d.slot, lane);
  __syncwarp();  // the query in shared memory and the new slot in global memory, for every lane
  attend_warp<KT, L, true>(qs, qs + HD, qs + HD + warp_scratch_floats(L), d.kp, d.vp, d.len, d.slot, lane,
                           out + rh * HD);
}

// ---------------------------------------------------------------------------------------------
// The split variant of the fused step, for batches of few rows (one or a few images): a warp per
// (row, head) walks all of its up to 257 slots in ~20 dependent rounds of loads, and with few rows
// most SMs idle. Here a block of kSplitWarps warps takes one (row, head): warp 0 does the q/k
// LayerNorms and the cache append (as the warp kernel, bit for bit), then warp w attends over the
// w-th contiguous part of the slots with attend_warp's loads, leaving its part's max score, its sum
// of exponentials and its unnormalised value sum; the block then rescales the parts to the common
// maximum and adds them (the flash-decoding combination, inside one block).
constexpr int kSplitWarps = 8;

// Slots per warp and the shared floats of one split block: q, the parts' value sums and
// statistics, then per warp the scratch and its slots' scores (each region a multiple of 4 floats).
__host__ __device__ constexpr int64_t split_part_slots(int64_t cap) { return (cap + kSplitWarps - 1) / kSplitWarps; }
__host__ __device__ constexpr int64_t round4(int64_t n) { return (n + 3) / 4 * 4; }
__host__ __device__ constexpr int64_t split_warp_floats(int L, int64_t cap) {
  return round4(warp_scratch_floats(L) + split_part_slots(cap));
}
__host__ __device__ constexpr int64_t split_smem_floats(int L, int64_t cap) {
  return round4(8 * L) + round4(kSplitWarps * 8 * L) + round4(2 * kSplitWarps) + kSplitWarps * split_warp_floats(L, cap);
}

template <typename KT, int L>
__global__ void __launch_bounds__(kSplitWarps * 32)
    qk_norm_attention_split_kernel(const __nv_bfloat16* __restrict__ qkv, int heads, const float* __restrict__ wq,
                                   const float* __restrict__ bq, const float* __restrict__ wk,
                                   const float* __restrict__ bk, float eps, KT* k, KT* v,
                                   const int64_t* __restrict__ last, int64_t cap, float scale,
                                   __nv_bfloat16* __restrict__ out) {
  constexpr int HD = 8 * L;
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t rh = blockIdx.x;  // row * heads + head
  float* qs = smem;
  float* accs = qs + round4(HD);                   // [kSplitWarps][HD]
  float* stats = accs + round4(kSplitWarps * HD);  // each part's max, then its sum
  float* mine = stats + round4(2 * kSplitWarps) + warp * split_warp_floats(L, cap);
  const DecodeRowHead<KT, L> d(qkv, k, v, last, rh, heads, cap);
  if (warp == 0) norm_and_append<KT, L>(d.row, heads, d.h, wq, bq, wk, bk, eps, scale, qs, d.kp, d.vp, d.slot, lane);
  __syncthreads();  // q in shared memory, the new slot in global memory (read through L2 below)

  const int per = (d.len + kSplitWarps - 1) / kSplitWarps;
  const int lo = min(d.len, warp * per), hi = min(d.len, lo + per);
  float mx, sum;
  attend_part<KT, L, true>(qs, mine, mine + warp_scratch_floats(L), d.kp + static_cast<int64_t>(lo) * HD,
                           d.vp + static_cast<int64_t>(lo) * HD, hi - lo, d.slot - lo, lane, accs + warp * HD, mx,
                           sum);
  if (lane == 0) {
    stats[warp] = mx;
    stats[kSplitWarps + warp] = sum;
  }
  __syncthreads();
  float m = -FLT_MAX;
#pragma unroll
  for (int w = 0; w < kSplitWarps; ++w) m = fmaxf(m, stats[w]);
  float den = 0.f, wt[kSplitWarps];
#pragma unroll
  for (int w = 0; w < kSplitWarps; ++w) {
    wt[w] = stats[kSplitWarps + w] > 0.f ? __expf(stats[w] - m) : 0.f;  // empty parts weigh nothing
    den += wt[w] * stats[kSplitWarps + w];
  }
  const float inv = 1.f / den;
  for (int i = threadIdx.x; i < HD; i += kSplitWarps * 32) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) o += wt[w] * accs[w * HD + i];
    out[rh * HD + i] = __float2bfloat16(o * inv);
  }
}

// Calls f(std::integral_constant<int, L>) for the head widths hd = 8·L the warp variant is built
// for (rar_b 48, rar_l 64, rar_xl 80, rar_xxl 88, and 128); false for the others.
template <typename F>
bool dispatch_warp_chunks(int hd, F&& f) {
  if (hd % 8 != 0) return false;
  switch (hd / 8) {
    case 6: f(std::integral_constant<int, 6>{}); return true;
    case 8: f(std::integral_constant<int, 8>{}); return true;
    case 10: f(std::integral_constant<int, 10>{}); return true;
    case 11: f(std::integral_constant<int, 11>{}); return true;
    case 16: f(std::integral_constant<int, 16>{}); return true;
    default: return false;
  }
}

// Launch shape of both warp kernels: kWarpsPerBlock (row, head) pairs a block, each warp's shared floats.
dim3 warp_grid(int64_t rows) { return dim3(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock)); }
size_t warp_block_smem_bytes(int hd, int64_t cap) {
  return sizeof(float) * kWarpsPerBlock * static_cast<size_t>(warp_smem_floats(hd / 8, cap));
}

template <typename KT>
void launch_warp_variant(const void* q, const void* k, const void* v, const int64_t* last, int64_t rows, int hd,
                         int64_t cap, float scale, void* out, cudaStream_t stream) {
  const dim3 grid = warp_grid(rows);
  const size_t smem = warp_block_smem_bytes(hd, cap);
  dispatch_warp_chunks(hd, [&](auto l_) {
    decode_attention_warp_kernel<KT, decltype(l_)::value><<<grid, kWarpsPerBlock * 32, smem, stream>>>(
        static_cast<const __nv_bfloat16*>(q), static_cast<const KT*>(k), static_cast<const KT*>(v), last, rows, cap,
        scale, static_cast<__nv_bfloat16*>(out));
  });
}

template <typename KT>
void launch_qk_norm_warp_variant(const void* qkv, int64_t rows, int heads, int hd, const float* wq, const float* bq,
                                 const float* wk, const float* bk, float eps, void* k, void* v, const int64_t* last,
                                 int64_t cap, float scale, void* out, cudaStream_t stream) {
  const dim3 grid = warp_grid(rows);
  const size_t smem = warp_block_smem_bytes(hd, cap);
  dispatch_warp_chunks(hd, [&](auto l_) {
    qk_norm_attention_warp_kernel<KT, decltype(l_)::value><<<grid, kWarpsPerBlock * 32, smem, stream>>>(
        static_cast<const __nv_bfloat16*>(qkv), heads, wq, bq, wk, bk, eps, static_cast<KT*>(k), static_cast<KT*>(v),
        last, rows, cap, scale, static_cast<__nv_bfloat16*>(out));
  });
}

template <typename KT>
void launch_qk_norm_split_variant(const void* qkv, int64_t rows, int heads, int hd, const float* wq, const float* bq,
                                  const float* wk, const float* bk, float eps, void* k, void* v, const int64_t* last,
                                  int64_t cap, float scale, void* out, cudaStream_t stream) {
  const size_t smem = sizeof(float) * static_cast<size_t>(split_smem_floats(hd / 8, cap));
  dispatch_warp_chunks(hd, [&](auto l_) {
    qk_norm_attention_split_kernel<KT, decltype(l_)::value>
        <<<dim3(static_cast<unsigned>(rows)), dim3(kSplitWarps * 32), smem, stream>>>(
            static_cast<const __nv_bfloat16*>(qkv), heads, wq, bq, wk, bk, eps, static_cast<KT*>(k),
            static_cast<KT*>(v), last, cap, scale, static_cast<__nv_bfloat16*>(out));
  });
}

// Shared memory of one block: the scores, then the larger of the tile partials and the groups'
// outputs (at most kThreads/L groups of hd floats = 8·kThreads).
size_t smem_bytes(int hd, int64_t cap) {
  return sizeof(float) * static_cast<size_t>(cap + std::max<int64_t>(static_cast<int64_t>(kTile) * (hd / 8), 8 * kThreads));
}

}  // namespace

bool decode_attention_supported(int hd, int64_t cap) {
  return hd % 8 == 0 && hd >= 8 && hd <= 256 && cap >= 1 && cap <= kMaxDecodeSlots &&
         smem_bytes(hd, cap) <= 48 * 1024;
}

bool decode_attention_warp_supported(int hd, int64_t cap, bool bf16_queries) {
  return bf16_queries && dispatch_warp_chunks(hd, [](auto) {}) && cap >= 1 && warp_block_smem_bytes(hd, cap) <= 48 * 1024;
}

bool decode_attention_split_supported(int hd, int64_t cap) {
  return decode_attention_warp_supported(hd, cap, true) &&
         sizeof(float) * static_cast<size_t>(split_smem_floats(hd / 8, cap)) <= 48 * 1024;
}

void decode_attention(DType t, const void* q, const void* k, const void* v, const int64_t* last, int64_t R, int heads,
                      int hd, int64_t cap, float scale, void* out, cudaStream_t stream, bool kv_fp8,
                      DecodeAttentionVariant variant) {
  if (R * heads == 0) return;
  if (variant == DecodeAttentionVariant::warp) {
    if (!decode_attention_warp_supported(hd, cap, t == DType::bf16))
      throw std::runtime_error("decode_attention: the warp variant takes bf16 queries, head dim 48/64/80/88/128 and a "
                               "cache of at most ~2,400 slots (got head dim " + std::to_string(hd) + ", cache " +
                               std::to_string(cap) + ")");
    if (kv_fp8)
      launch_warp_variant<__nv_fp8_e4m3>(q, k, v, last, R * heads, hd, cap, scale, out, stream);
    else
      launch_warp_variant<__nv_bfloat16>(q, k, v, last, R * heads, hd, cap, scale, out, stream);
  } else {
    if (!decode_attention_supported(hd, cap))
      throw std::runtime_error("decode_attention: head dim " + std::to_string(hd) + " / cache " + std::to_string(cap) +
                               " not supported");
    const size_t smem = smem_bytes(hd, cap);
    const dim3 grid(static_cast<unsigned>(R * heads));
    if (t == DType::bf16 && kv_fp8)
      decode_attention_kernel<__nv_bfloat16, __nv_fp8_e4m3><<<grid, kThreads, smem, stream>>>(
          static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_fp8_e4m3*>(k),
          static_cast<const __nv_fp8_e4m3*>(v), last, hd, cap, scale, static_cast<__nv_bfloat16*>(out));
    else if (t == DType::bf16)
      decode_attention_kernel<__nv_bfloat16, __nv_bfloat16><<<grid, kThreads, smem, stream>>>(
          static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(k),
          static_cast<const __nv_bfloat16*>(v), last, hd, cap, scale, static_cast<__nv_bfloat16*>(out));
    else if (!kv_fp8)
      decode_attention_kernel<float, float><<<grid, kThreads, smem, stream>>>(static_cast<const float*>(q),
                                                                             static_cast<const float*>(k),
                                                                             static_cast<const float*>(v), last, hd,
                                                                             cap, scale, static_cast<float*>(out));
    else
      throw std::runtime_error("decode_attention: an fp8 cache takes bf16 queries");
  }
  const auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("decode_attention: ") + cudaGetErrorString(err));
}

void qk_norm_decode_attention(const void* qkv, int64_t R, int heads, int hd, const float* wq, const float* bq,
                              const float* wk, const float* bk, float eps, void* k, void* v, const int64_t* last,
                              int64_t cap, float scale, void* out, cudaStream_t stream, bool kv_fp8, bool split) {
  if (R * heads == 0) return;
  if (!decode_attention_warp_supported(hd, cap, true) || (split && !decode_attention_split_supported(hd, cap)))
    throw std::runtime_error("qk_norm_decode_attention: head dim " + std::to_string(hd) + " / cache " +
                             std::to_string(cap) + " not supported");
  if (split && kv_fp8)
    launch_qk_norm_split_variant<__nv_fp8_e4m3>(qkv, R * heads, heads, hd, wq, bq, wk, bk, eps, k, v, last, cap, scale,
                                                out, stream);
  else if (split)
    launch_qk_norm_split_variant<__nv_bfloat16>(qkv, R * heads, heads, hd, wq, bq, wk, bk, eps, k, v, last, cap, scale,
                                                out, stream);
  else if (kv_fp8)
    launch_qk_norm_warp_variant<__nv_fp8_e4m3>(qkv, R * heads, heads, hd, wq, bq, wk, bk, eps, k, v, last, cap, scale,
                                               out, stream);
  else
    launch_qk_norm_warp_variant<__nv_bfloat16>(qkv, R * heads, heads, hd, wq, bq, wk, bk, eps, k, v, last, cap, scale,
                                               out, stream);
  const auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("qk_norm_decode_attention: ") + cudaGetErrorString(err));
}

}  // namespace rar::kernels
