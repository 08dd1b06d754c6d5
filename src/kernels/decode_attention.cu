// decode_attention.cu — see decode_attention.h. One block of 128 threads per (row, head). The
// kernel is bound by reading the cache (every step reads all filled K and V rows), so it reads K
// and V in one pass with several 16-byte loads in flight per lane: flash-decoding's running softmax
// per group of lanes, the groups merged at the end.
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
// Keys each group has in flight at once.
constexpr int kUnroll = 4;

// Sum over aligned groups of P lanes (every lane of the warp takes part).
template <int P>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = P / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Groups of P lanes (P = hd/8 rounded up to a power of two; lanes past hd/8 idle) each take every
// groups-th key: a lane reads one 16-byte slice of the key row and of the value row, the group sums
// its dot product by shuffles, and keeps a running (max, sum, weighted values) softmax state
// (one pass over K and V together, kUnroll keys in flight). The groups' states are merged at the end.
template <typename T, int P>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                    const T* __restrict__ v,
                                                                    const int64_t* __restrict__ last, int hd,
                                                                    int64_t cap, float scale, T* __restrict__ out) {
  constexpr int kGroups = kThreads / P;
  __shared__ float g_max[kGroups], g_sum[kGroups];
  __shared__ float g_acc[kGroups * 8 * P];  // each group's weighted value sum [hd]
  const int64_t rh = blockIdx.x;            // row * heads + head
  const int64_t n = *last + 1;
  const int len = static_cast<int>(n < cap ? n : cap);
  const int L = hd / 8;
  const int group = threadIdx.x / P, sub = threadIdx.x % P;
  const bool active = sub < L;
  const T* kp = k + rh * cap * hd + 8 * sub;
  const T* vp = v + rh * cap * hd + 8 * sub;
  float qv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (active) {
    load8(q + rh * hd + 8 * sub, qv);
#pragma unroll
    for (int e = 0; e < 8; ++e) qv[e] *= scale;
  }
  float m = -FLT_MAX, l = 0.f;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  // Every lane runs every iteration (the shuffles need the whole warp); keys past len are masked.
  for (int base = 0; base < len; base += kUnroll * kGroups) {
    float kv[kUnroll][8], vv[kUnroll][8], sc[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = base + group + u * kGroups;
      if (active && j < len) {
        load8(kp + static_cast<int64_t>(j) * hd, kv[u]);
        load8(vp + static_cast<int64_t>(j) * hd, vv[u]);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) kv[u][e] = vv[u][e] = 0.f;
      }
    }
    float m_new = m;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float d = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) d += qv[e] * kv[u][e];
      sc[u] = group_sum<P>(d);
      if (base + group + u * kGroups < len) m_new = fmaxf(m_new, sc[u]);
    }
    const float corr = __expf(m - m_new);
    l *= corr;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] *= corr;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + group + u * kGroups < len) {
        const float p = __expf(sc[u] - m_new);
        l += p;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] += p * vv[u][e];
      }
    }
    m = m_new;
  }
  if (sub == 0) {
    g_max[group] = m;
    g_sum[group] = l;
  }
  if (active) {
#pragma unroll
    for (int e = 0; e < 8; ++e) g_acc[group * hd + 8 * sub + e] = acc[e];
  }
  __syncthreads();
  float mx = -FLT_MAX;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) mx = fmaxf(mx, g_max[g]);
  float total = 0.f;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) total += g_sum[g] * __expf(g_max[g] - mx);
  const float inv = 1.f / total;
  for (int i = threadIdx.x; i < hd; i += kThreads) {
    float o = 0.f;
    for (int g = 0; g < kGroups; ++g) o += g_acc[g * hd + i] * __expf(g_max[g] - mx);
    out[rh * hd + i] = from_f<T>(o * inv);
  }
}

// Calls f(std::integral_constant<int, P>) for P = hd/8 rounded up to a power of two.
template <typename F>
void dispatch_lanes(int hd, F&& f) {
  const int L = hd / 8;
  if (L <= 1) f(std::integral_constant<int, 1>{});
  else if (L <= 2) f(std::integral_constant<int, 2>{});
  else if (L <= 4) f(std::integral_constant<int, 4>{});
  else if (L <= 8) f(std::integral_constant<int, 8>{});
  else if (L <= 16) f(std::integral_constant<int, 16>{});
  else f(std::integral_constant<int, 32>{});
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
  const dim3 grid(static_cast<unsigned>(R * heads));
  dispatch_lanes(hd, [&](auto p_) {
    constexpr int P = decltype(p_)::value;
    if (t == DType::bf16)
      decode_attention_kernel<__nv_bfloat16, P><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(k),
          static_cast<const __nv_bfloat16*>(v), last, hd, cap, scale, static_cast<__nv_bfloat16*>(out));
    else
      decode_attention_kernel<float, P><<<grid, kThreads, 0, stream>>>(
          static_cast<const float*>(q), static_cast<const float*>(k), static_cast<const float*>(v), last, hd, cap,
          scale, static_cast<float*>(out));
  });
  const auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("decode_attention: ") + cudaGetErrorString(err));
}

}  // namespace rar::kernels
