// decode_attention.cu — see decode_attention.h. One block of 128 threads per (row, head). The
// kernel is bound by reading the cache (every step reads all filled K and V rows), so both passes
// read it in consecutive 16-byte chunks per thread with several loads in flight: the scores of
// the valid keys go to shared memory, a block-wide max and sum give the softmax, and the values
// are summed by groups of hd/8 threads (one 16-byte slice of a value row each), whose partial
// sums are then added in shared memory.
#include "kernels/decode_attention.h"
#include "kernels/vec_io.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <stdexcept>
#include <string>

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

void decode_attention(DType t, const void* q, const void* k, const void* v, const int64_t* last, int64_t R, int heads,
                      int hd, int64_t cap, float scale, void* out, cudaStream_t stream, bool kv_fp8) {
  if (R * heads == 0) return;
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
  const auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("decode_attention: ") + cudaGetErrorString(err));
}

}  // namespace rar::kernels
