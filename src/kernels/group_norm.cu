// group_norm.cu — see group_norm.h. Statistics: a block takes a run of pixels of one image, each
// thread a fixed 4-channel slice of every pixel it visits (so a warp reads contiguous memory); the
// threads' float sums are added per group in shared memory, the blocks' per-group sums (double) in
// a small second kernel, always in the same order (deterministic). Normalising: one thread per 4
// consecutive elements, grid-stride.
#include "kernels/group_norm.h"
#include "kernels/vec_io.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace rar::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxGroups = kThreads;
constexpr int kLoadsPerThread = 32;  // pixels each statistics thread visits

int64_t pixels_per_block(int64_t C) { return (kThreads / (C / 4)) * kLoadsPerThread; }

// Per block: each group's float sums over its pixel run -> part[n][block][group] (sum, sum of squares).
template <typename T>
__global__ void __launch_bounds__(kThreads) gn_stats(const T* __restrict__ x, int64_t HW, int C, int Cg,
                                                     int64_t ppb, double* __restrict__ part) {
  __shared__ float s_sum[kThreads], s_sq[kThreads];
  const int G = C / Cg, Q = C / 4;
  const int64_t n = blockIdx.y;
  const int q = threadIdx.x % Q, lane_pixel = threadIdx.x / Q, pixel_step = kThreads / Q;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * ppb;
  const int64_t p1 = min(HW, p0 + ppb);
  float s = 0.f, ss = 0.f;
  if (lane_pixel < pixel_step) {
    for (int64_t p = p0 + lane_pixel; p < p1; p += pixel_step) {
      float v[4];
      load4(x + (n * HW + p) * C + 4 * q, v);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s += v[j];
        ss += v[j] * v[j];
      }
    }
  }
  s_sum[threadIdx.x] = s;
  s_sq[threadIdx.x] = ss;
  __syncthreads();
  // Group g's threads: slices q in [g·Cg/4, (g+1)·Cg/4) of every pixel lane, summed in a fixed order
  // (the result does not depend on scheduling).
  for (int g = threadIdx.x; g < G; g += kThreads) {
    double a = 0.0, b = 0.0;
    for (int lp = 0; lp < pixel_step; ++lp)
      for (int qq = g * Cg / 4; qq < (g + 1) * Cg / 4; ++qq) {
        a += s_sum[lp * Q + qq];
        b += s_sq[lp * Q + qq];
      }
    double* out = part + ((n * gridDim.x + blockIdx.x) * G + g) * 2;
    out[0] = a;
    out[1] = b;
  }
}

// stats[n][g] = the blocks' partial sums added in block order.
__global__ void gn_finalize(const double* __restrict__ part, int64_t N, int blocks, int G, double* __restrict__ stats) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;  // n * G + g
  if (i >= N * G) return;
  const int64_t n = i / G, g = i - n * G;
  double a = 0.0, b = 0.0;
  for (int k = 0; k < blocks; ++k) {
    a += part[((n * blocks + k) * G + g) * 2];
    b += part[((n * blocks + k) * G + g) * 2 + 1];
  }
  stats[i * 2] = a;
  stats[i * 2 + 1] = b;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) gn_apply(const T* __restrict__ x, int64_t N, int64_t HW, int C, int Cg,
                                                     const double* __restrict__ ws, const float* __restrict__ gamma,
                                                     const float* __restrict__ beta, float eps, bool silu,
                                                     T* __restrict__ y) {
  const int G = C / Cg;
  const int64_t quads = N * HW * C / 4;
  const double inv_count = 1.0 / (static_cast<double>(HW) * Cg);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < quads;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t e = 4 * i;
    const int c = static_cast<int>(e % C);
    const int64_t n = e / (HW * C);
    const double* st = ws + (n * G + c / Cg) * 2;
    const double mean = st[0] * inv_count;
    const double var = fmax(st[1] * inv_count - mean * mean, 0.0);
    const float mu = static_cast<float>(mean), rs = rsqrtf(static_cast<float>(var) + eps);
    float v[4], g[4], b[4], o[4];
    load4(x + e, v);
    load4(gamma + c, g);
    load4(beta + c, b);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      o[j] = (v[j] - mu) * rs * g[j] + b[j];
      if (silu) o[j] = o[j] / (1.f + __expf(-o[j]));
    }
    store4(y + e, o);
  }
}

}  // namespace

bool group_norm_nhwc_supported(int64_t C, int64_t groups) {
  return groups > 0 && groups <= kMaxGroups && C % groups == 0 && C % 4 == 0 && (C / groups) % 4 == 0 &&
         C <= 4 * kThreads;
}

int64_t group_norm_nhwc_workspace(int64_t N, int64_t HW, int64_t C, int64_t groups) {
  const int64_t blocks = (HW + pixels_per_block(C) - 1) / pixels_per_block(C);
  return N * groups * 2 * (blocks + 1);
}

void group_norm_nhwc(DType t, const void* x, int64_t N, int64_t HW, int64_t C, int64_t groups, const float* gamma,
                     const float* beta, float eps, bool silu, void* y, double* ws, cudaStream_t stream) {
  if (N * HW == 0) return;
  if (!group_norm_nhwc_supported(C, groups))
    throw std::runtime_error("group_norm_nhwc: " + std::to_string(C) + " channels in " + std::to_string(groups) +
                             " groups not supported");
  const int64_t ppb = pixels_per_block(C);
  const int Cg = static_cast<int>(C / groups), G = static_cast<int>(groups), Ci = static_cast<int>(C);
  const int blocks = static_cast<int>((HW + ppb - 1) / ppb);
  double* stats = ws;                // [N, G, 2]
  double* part = ws + N * groups * 2;  // [N, blocks, G, 2]
  const dim3 sgrid(static_cast<unsigned>(blocks), static_cast<unsigned>(N));
  const unsigned fgrid = static_cast<unsigned>((N * groups + kThreads - 1) / kThreads);
  const int64_t quads = N * HW * C / 4;
  const unsigned agrid = static_cast<unsigned>(std::min<int64_t>((quads + kThreads - 1) / kThreads, 132 * 32));
  if (t == DType::bf16) {
    const auto* xp = static_cast<const __nv_bfloat16*>(x);
    gn_stats<__nv_bfloat16><<<sgrid, kThreads, 0, stream>>>(xp, HW, Ci, Cg, ppb, part);
    gn_finalize<<<fgrid, kThreads, 0, stream>>>(part, N, blocks, G, stats);
    gn_apply<__nv_bfloat16><<<agrid, kThreads, 0, stream>>>(xp, N, HW, Ci, Cg, stats, gamma, beta, eps, silu,
                                                            static_cast<__nv_bfloat16*>(y));
  } else {
    const auto* xp = static_cast<const float*>(x);
    gn_stats<float><<<sgrid, kThreads, 0, stream>>>(xp, HW, Ci, Cg, ppb, part);
    gn_finalize<<<fgrid, kThreads, 0, stream>>>(part, N, blocks, G, stats);
    gn_apply<float><<<agrid, kThreads, 0, stream>>>(xp, N, HW, Ci, Cg, stats, gamma, beta, eps, silu,
                                                    static_cast<float*>(y));
  }
  const auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("group_norm_nhwc: ") + cudaGetErrorString(err));
}

}  // namespace rar::kernels
