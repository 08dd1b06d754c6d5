// skinny_linear.cu — see skinny_linear.h.
#include "kernels/skinny_linear.h"
#include "kernels/vec_io.cuh"

#include <cuda_bf16.h>

#include <stdexcept>
#include <string>

namespace rar::kernels {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kRB = kSkinnyRowsPerBlock;
constexpr int kT = kSkinnyThreads;
constexpr int kWarps = kT / 32;
constexpr int kUnroll = 2;  // chunks of each weight row in flight per thread (kRB x kUnroll loads)

// A weight chunk read once: through the non-coherent path, not kept in L1 (no other thread reads it).
__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ float gelu_exact(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }

// Block b computes columns n0 = b·kRB ... n0 + kRB - 1 of all M rows. Thread i owns the chunks
// i, i + kT, i + 2kT, ... of K (8 elements each): it issues its kRB x kUnroll weight loads before
// any arithmetic, reads the M rows of x at the same chunks (small, cached), and keeps kRB x M
// partial sums; the block then adds its threads' partials (shuffles, then one shared-memory row per
// warp), and the first kRB·M threads add the bias, apply GELU and write.
template <int M, bool Gelu>
__global__ void __launch_bounds__(kT) skinny_linear_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                           const bf16* __restrict__ b, int64_t N, int64_t K,
                                                           bf16* __restrict__ y) {
  __shared__ float red[kWarps][kRB * M];
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kRB;
  const int chunks = static_cast<int>(K / 8);
  const uint4* wr[kRB];
#pragma unroll
  for (int r = 0; r < kRB; ++r) wr[r] = reinterpret_cast<const uint4*>(w + (n0 + r < N ? n0 + r : n0) * K);
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  float acc[kRB][M];
#pragma unroll
  for (int r = 0; r < kRB; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

  for (int c0 = threadIdx.x; c0 < chunks; c0 += kUnroll * kT) {
    uint4 wv[kUnroll][kRB];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kT;
#pragma unroll
      for (int r = 0; r < kRB; ++r)
        if (c < chunks) wv[u][r] = load_streaming(wr[r] + c);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kT;
      if (c >= chunks) break;
      float xf[M][8];
#pragma unroll
      for (int m = 0; m < M; ++m) unpack8(__ldg(xr + static_cast<int64_t>(m) * chunks + c), xf[m]);
#pragma unroll
      for (int r = 0; r < kRB; ++r) {
        float wf[8];
        unpack8(wv[u][r], wf);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          float s = acc[r][m];
#pragma unroll
          for (int e = 0; e < 8; ++e) s = fmaf(wf[e], xf[m][e], s);
          acc[r][m] = s;
        }
      }
    }
  }

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < kRB; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float s = warp_sum(acc[r][m]);
      if (lane == 0) red[warp][r * M + m] = s;
    }
  __syncthreads();
  if (threadIdx.x < kRB * M) {
    const int r = threadIdx.x / M, m = threadIdx.x - r * M;
    const int64_t n = n0 + r;
    if (n < N) {
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < kWarps; ++i) s += red[i][threadIdx.x];
      if (b) s += __bfloat162float(b[n]);
      if (Gelu) s = gelu_exact(s);
      y[static_cast<int64_t>(m) * N + n] = __float2bfloat16(s);
    }
  }
}

template <int M>
void launch(const void* x, const void* w, const void* b, int64_t N, int64_t K, bool gelu, void* y, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((N + kRB - 1) / kRB));
  auto* xp = static_cast<const bf16*>(x);
  auto* wp = static_cast<const bf16*>(w);
  auto* bp = static_cast<const bf16*>(b);
  auto* yp = static_cast<bf16*>(y);
  if (gelu)
    skinny_linear_kernel<M, true><<<grid, kT, 0, s>>>(xp, wp, bp, N, K, yp);
  else
    skinny_linear_kernel<M, false><<<grid, kT, 0, s>>>(xp, wp, bp, N, K, yp);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool skinny_linear_supported(int64_t M, int64_t K, const void* x, const void* w) {
  return M >= 1 && M <= kSkinnyMaxRows && K >= 8 && K % 8 == 0 && K / 8 <= (int64_t{1} << 30) && aligned16(x) &&
         aligned16(w);
}

void skinny_linear(const void* x, const void* w, const void* b, int64_t M, int64_t N, int64_t K, bool gelu, void* y,
                   cudaStream_t stream) {
  if (!skinny_linear_supported(M, K, x, w) || N < 1)
    throw std::invalid_argument("skinny_linear: unsupported shape M=" + std::to_string(M) + " K=" + std::to_string(K));
  switch (M) {
    case 1: launch<1>(x, w, b, N, K, gelu, y, stream); break;
    case 2: launch<2>(x, w, b, N, K, gelu, y, stream); break;
    case 3: launch<3>(x, w, b, N, K, gelu, y, stream); break;
    case 4: launch<4>(x, w, b, N, K, gelu, y, stream); break;
    case 5: launch<5>(x, w, b, N, K, gelu, y, stream); break;
    case 6: launch<6>(x, w, b, N, K, gelu, y, stream); break;
    case 7: launch<7>(x, w, b, N, K, gelu, y, stream); break;
    default: launch<8>(x, w, b, N, K, gelu, y, stream); break;
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("skinny_linear: launch failed: ") + cudaGetErrorString(e));
}

}  // namespace rar::kernels
