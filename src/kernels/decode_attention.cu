// decode_attention.cu — see decode_attention.h. One block of 128 threads per (row, head): the
// scores of the valid keys (one key per thread, 16-byte loads) go to shared memory, a block-wide
// max and sum give the softmax, and the values are summed by groups of hd/8 threads (one 16-byte
// slice of a value row each, so a group reads a row contiguously), then the groups' partial sums
// are added in shared memory.
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

template <typename T>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                    const T* __restrict__ v,
                                                                    const int64_t* __restrict__ last, int hd,
                                                                    int64_t cap, float scale, T* __restrict__ out) {
  extern __shared__ float smem[];  // scores [len], later the groups' partial outputs
  __shared__ float qs[256];
  __shared__ float red[kWarps];
  const int64_t rh = blockIdx.x;  // row * heads + head
  const int64_t n = *last + 1;
  const int len = static_cast<int>(n < cap ? n : cap);
  const T* kp = k + rh * cap * hd;
  const T* vp = v + rh * cap * hd;
  for (int i = threadIdx.x; i < hd; i += kThreads) qs[i] = to_f(q[rh * hd + i]) * scale;
  __syncthreads();

  float mx = -FLT_MAX;
  for (int j = threadIdx.x; j < len; j += kThreads) {
    const T* kj = kp + static_cast<int64_t>(j) * hd;
    float acc = 0.f;
    for (int c = 0; c < hd; c += 8) {
      float kv[8];
      load8(kj + c, kv);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc += qs[c + e] * kv[e];
    }
    smem[j] = acc;
    mx = fmaxf(mx, acc);
  }
  mx = block_reduce(mx, red, MaxOp{});
  float sum = 0.f;
  for (int j = threadIdx.x; j < len; j += kThreads) {
    const float e = __expf(smem[j] - mx);
    smem[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, red, SumOp{});  // its barriers also publish smem

  const int L = hd / 8, groups = kThreads / L;
  const int g = threadIdx.x / L, sub = threadIdx.x - g * L;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (g < groups) {
    for (int j = g; j < len; j += groups) {
      const float p = smem[j];
      float vv[8];
      load8(vp + static_cast<int64_t>(j) * hd + 8 * sub, vv);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] += p * vv[e];
    }
  }
  __syncthreads();  // scores read: smem becomes the partial outputs [groups][hd]
  if (g < groups) {
#pragma unroll
    for (int e = 0; e < 8; ++e) smem[g * hd + 8 * sub + e] = acc[e];
  }
  __syncthreads();
  const float inv = 1.f / sum;
  for (int i = threadIdx.x; i < hd; i += kThreads) {
    float o = 0.f;
    for (int gg = 0; gg < groups; ++gg) o += smem[gg * hd + i];
    out[rh * hd + i] = from_f<T>(o * inv);
  }
}

}  // namespace

bool decode_attention_supported(int hd, int64_t cap) {
  return hd % 8 == 0 && hd >= 8 && hd <= 256 && cap >= 1 && cap <= kMaxDecodeSlots;
}

void decode_attention(DType t, const void* q, const void* k, const void* v, const int64_t* last, int64_t R, int heads,
                      int hd, int64_t cap, float scale, void* out, cudaStream_t stream) {
  if (R * heads == 0) return;
  if (!decode_attention_supported(hd, cap))
    throw std::runtime_error("decode_attention: head dim " + std::to_string(hd) + " / cache " + std::to_string(cap) +
                             " not supported");
  // shared: the scores (cap floats) or the partial outputs (at most 8 * 128 floats)
  const size_t smem = sizeof(float) * static_cast<size_t>(std::max<int64_t>(cap, 8 * kThreads));
  const dim3 grid(static_cast<unsigned>(R * heads));
  if (t == DType::bf16)
    decode_attention_kernel<__nv_bfloat16><<<grid, kThreads, smem, stream>>>(
        static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(k),
        static_cast<const __nv_bfloat16*>(v), last, hd, cap, scale, static_cast<__nv_bfloat16*>(out));
  else
    decode_attention_kernel<float><<<grid, kThreads, smem, stream>>>(static_cast<const float*>(q),
                                                                     static_cast<const float*>(k),
                                                                     static_cast<const float*>(v), last, hd, cap,
                                                                     scale, static_cast<float*>(out));
  const auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("decode_attention: ") + cudaGetErrorString(err));
}

}  // namespace rar::kernels
