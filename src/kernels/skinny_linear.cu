// skinny_linear.cu — see skinny_linear.h.
#include "kernels/skinny_linear.h"
#include "kernels/pdl.cuh"
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
// The normalised rows' shared memory, leaving room under the 48 KiB a block gets without opting in
// for the kernel's static arrays (at most 576 bytes).
constexpr size_t kMaxSmem = 47 * 1024;

// What stands in front of the product and behind it.
enum Front { kPlainIn, kLnIn };
enum Back { kStore, kGelu, kResidual };

struct LnArgs {
  const float* w;
  const float* b;
  float eps;
  const bf16* table;
  int64_t stride;
  const int64_t* index;
  int64_t shift_col, scale_col;
};
struct GateArgs {
  const bf16* table;
  int64_t stride;
  const int64_t* index;
  int64_t gate_col;
};

// A weight chunk read once: through the non-coherent path, not kept in L1 (no other thread reads it).
__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ float gelu_exact(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }
__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16(v)); }

// kLnIn: the block's M input rows, normalised and modulated, into xs [M][K] (floats holding bf16
// values), as ln_modulate_fwd_rows computes them.
template <int M>
__device__ __forceinline__ void ln_front(const bf16* __restrict__ x, const LnArgs& ln, int K, float* xs) {
  __shared__ float stat[2][M];
  const int chunks = K / 8;
  for (int i = threadIdx.x; i < M * chunks; i += kT) {
    const int m = i / chunks, c = i - m * chunks;
    float v[8];
    load8(x + static_cast<int64_t>(m) * K + 8 * c, v);
    store8(xs + static_cast<int64_t>(m) * K + 8 * c, v);
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int m = warp; m < M; m += kWarps) {
    const float* r = xs + static_cast<int64_t>(m) * K;
    float s = 0.f;
    for (int k = lane; k < K; k += 32) s += r[k];
    const float mu = warp_sum(s) / K;
    float q = 0.f;
    for (int k = lane; k < K; k += 32) q += (r[k] - mu) * (r[k] - mu);
    const float rs = rsqrtf(warp_sum(q) / K + ln.eps);
    if (lane == 0) stat[0][m] = mu, stat[1][m] = rs;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < M * K; i += kT) {
    const int m = i / K, k = i - m * K;
    float n = (xs[i] - stat[0][m]) * stat[1][m];
    if (ln.w) n = n * ln.w[k] + ln.b[k];
    const bf16* row = ln.table + ln.index[m] * ln.stride;
    xs[i] = round_bf16(n * (1.f + __bfloat162float(row[ln.scale_col + k])) + __bfloat162float(row[ln.shift_col + k]));
  }
  __syncthreads();
}

// Eight elements of row m at chunk c of the product's input: from global memory (bf16) or from the
// normalised rows in shared memory.
template <Front F>
__device__ __forceinline__ void input8(const bf16* __restrict__ x, const float* xs, int m, int chunks, int c,
                                       float f[8]) {
  if constexpr (F == kLnIn) {
    const float* p = xs + (static_cast<int64_t>(m) * chunks + c) * 8;
    const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  } else {
    unpack8(__ldg(reinterpret_cast<const uint4*>(x) + static_cast<int64_t>(m) * chunks + c), f);
  }
}

// Block b computes columns n0 = b·kRB ... n0 + kRB - 1 of all M rows. Thread i owns the chunks
// i, i + kT, i + 2kT, ... of K (8 elements each): it issues its kRB x kUnroll weight loads before
// any arithmetic, reads the M input rows at the same chunks, and keeps kRB x M partial sums; the
// block then adds its threads' partials (shuffles, then one shared-memory row per warp), and the
// first kRB·M threads finish: bias, then GELU, a store, or the gated residual into y (= x, in place).
// Launched with programmatic dependent launch, the first weight loads are issued before waiting for
// the previous kernel (weights are no kernel's output); everything else comes after.
template <int M, Front F, Back B>
__global__ void __launch_bounds__(kT) skinny_kernel(const bf16* __restrict__ x, LnArgs ln, const bf16* __restrict__ w,
                                                    const bf16* __restrict__ b, GateArgs gate, int64_t N, int64_t K,
                                                    bf16* __restrict__ y) {
  extern __shared__ float xs[];  // kLnIn: [M][K]
  __shared__ float red[kWarps][kRB * M];
  pdl_trigger();
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kRB;
  const int chunks = static_cast<int>(K / 8);
  const uint4* wr[kRB];
#pragma unroll
  for (int r = 0; r < kRB; ++r) wr[r] = reinterpret_cast<const uint4*>(w + (n0 + r < N ? n0 + r : n0) * K);
  uint4 wv[kUnroll][kRB];
  auto load_weights = [&](int c0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kT;
#pragma unroll
      for (int r = 0; r < kRB; ++r)
        if (c < chunks) wv[u][r] = load_streaming(wr[r] + c);
    }
  };
  load_weights(threadIdx.x);
  pdl_wait();  // from here on the previous kernel's outputs (x, the residual stream) are complete
  if constexpr (F == kLnIn) ln_front<M>(x, ln, static_cast<int>(K), xs);
  float acc[kRB][M];
#pragma unroll
  for (int r = 0; r < kRB; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

  for (int c0 = threadIdx.x; c0 < chunks; c0 += kUnroll * kT) {
    if (c0 != static_cast<int>(threadIdx.x)) load_weights(c0);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kT;
      if (c >= chunks) break;
      float xf[M][8];
#pragma unroll
      for (int m = 0; m < M; ++m) input8<F>(x, xs, m, chunks, c, xf[m]);
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
      bf16* out = y + static_cast<int64_t>(m) * N + n;
      if constexpr (B == kResidual) {
        const float g = __bfloat162float(gate.table[gate.index[m] * gate.stride + gate.gate_col + n]);
        *out = __float2bfloat16(__bfloat162float(*out) + g * round_bf16(s));
      } else {
        *out = __float2bfloat16(B == kGelu ? gelu_exact(s) : s);
      }
    }
  }
}

template <int M, Front F, Back B>
void launch_one(const void* x, const LnArgs& ln, const void* w, const void* b, const GateArgs& gate, int64_t N,
                int64_t K, void* y, cudaStream_t s, bool pdl) {
  const dim3 grid(static_cast<unsigned>((N + kRB - 1) / kRB));
  const size_t smem = F == kLnIn ? sizeof(float) * static_cast<size_t>(M * K) : 0;
  launch_maybe_pdl(pdl, skinny_kernel<M, F, B>, grid, dim3(kT), smem, s, static_cast<const bf16*>(x), ln,
                   static_cast<const bf16*>(w), static_cast<const bf16*>(b), gate, N, K, static_cast<bf16*>(y));
}

template <Front F, Back B>
void launch(int64_t M, const void* x, const LnArgs& ln, const void* w, const void* b, const GateArgs& gate, int64_t N,
            int64_t K, void* y, cudaStream_t s, bool pdl = false) {
  switch (M) {
    case 1: launch_one<1, F, B>(x, ln, w, b, gate, N, K, y, s, pdl); break;
    case 2: launch_one<2, F, B>(x, ln, w, b, gate, N, K, y, s, pdl); break;
    case 3: launch_one<3, F, B>(x, ln, w, b, gate, N, K, y, s, pdl); break;
    case 4: launch_one<4, F, B>(x, ln, w, b, gate, N, K, y, s, pdl); break;
    case 5: launch_one<5, F, B>(x, ln, w, b, gate, N, K, y, s, pdl); break;
    case 6: launch_one<6, F, B>(x, ln, w, b, gate, N, K, y, s, pdl); break;
    case 7: launch_one<7, F, B>(x, ln, w, b, gate, N, K, y, s, pdl); break;
    default: launch_one<8, F, B>(x, ln, w, b, gate, N, K, y, s, pdl); break;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": launch failed: " + cudaGetErrorString(e));
}

void require(bool ok, const char* what, int64_t M, int64_t K) {
  if (!ok)
    throw std::invalid_argument(std::string(what) + ": unsupported shape M=" + std::to_string(M) +
                                " K=" + std::to_string(K));
}

}  // namespace

bool skinny_linear_supported(int64_t M, int64_t K, const void* x, const void* w) {
  return M >= 1 && M <= kSkinnyMaxRows && K >= 8 && K % 8 == 0 && K / 8 <= (int64_t{1} << 30) && aligned16(x) &&
         aligned16(w);
}

bool skinny_ln_linear_supported(int64_t M, int64_t K, const void* x, const void* w) {
  return skinny_linear_supported(M, K, x, w) && sizeof(float) * static_cast<size_t>(M * K) <= kMaxSmem;
}

void skinny_linear(const void* x, const void* w, const void* b, int64_t M, int64_t N, int64_t K, bool gelu, void* y,
                   cudaStream_t stream) {
  require(skinny_linear_supported(M, K, x, w) && N >= 1, "skinny_linear", M, K);
  const LnArgs ln{};
  const GateArgs gate{};
  if (gelu)
    launch<kPlainIn, kGelu>(M, x, ln, w, b, gate, N, K, y, stream);
  else
    launch<kPlainIn, kStore>(M, x, ln, w, b, gate, N, K, y, stream);
  check_launch("skinny_linear");
}

void skinny_ln_linear(const void* x, const float* w_ln, const float* b_ln, float eps, const AdaRows& ada,
                      int64_t shift_col, int64_t scale_col, const void* w, const void* b, int64_t M, int64_t N,
                      int64_t K, bool gelu, void* y, cudaStream_t stream, bool pdl) {
  require(skinny_ln_linear_supported(M, K, x, w) && N >= 1 && ada.table && ada.index, "skinny_ln_linear", M, K);
  const LnArgs ln{w_ln, b_ln, eps, static_cast<const bf16*>(ada.table), ada.stride, ada.index, shift_col, scale_col};
  const GateArgs gate{};
  if (gelu)
    launch<kLnIn, kGelu>(M, x, ln, w, b, gate, N, K, y, stream, pdl);
  else
    launch<kLnIn, kStore>(M, x, ln, w, b, gate, N, K, y, stream, pdl);
  check_launch("skinny_ln_linear");
}

void skinny_linear_residual(const void* h, const void* w, const void* b, const AdaRows& ada, int64_t gate_col,
                            int64_t M, int64_t N, int64_t K, void* x, cudaStream_t stream, bool pdl) {
  require(skinny_linear_supported(M, K, h, w) && N >= 1 && ada.table && ada.index, "skinny_linear_residual", M, K);
  const LnArgs ln{};
  const GateArgs gate{static_cast<const bf16*>(ada.table), ada.stride, ada.index, gate_col};
  launch<kPlainIn, kResidual>(M, h, ln, w, b, gate, N, K, x, stream, pdl);
  check_launch("skinny_linear_residual");
}

}  // namespace rar::kernels
