// block_common.cuh — what the block ops' kernels share (included by ln_modulate.cu, qk_norm.cu,
// gated_residual.cu, gelu_dropout.cu): launch shapes, alignment checks and the compile-time
// dispatch from run-time dtypes and widths. One warp per normalised row: each lane keeps its
// ceil(width/32) values in registers (K is a template parameter), so a row is read once; sums are
// warp shuffles. Backward kernels walk rows with a grid-stride loop and write per-warp or per-block
// partial sums of the affine gradients (summed by the caller: deterministic, no atomics).
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/block_kernels.h"
#include "kernels/vec_io.cuh"

namespace rar::kernels {
namespace {

constexpr int kWarps = 8;  // warps per block
constexpr int kThreads = 32 * kWarps;

inline bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

inline void check_launch(const char* what) {
  auto err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

inline int64_t blocks_for(int64_t rows) { return (rows + kWarps - 1) / kWarps; }

// Launch shape of the warp-per-row forward kernels (they find their row from blockDim): kWarps
// warps a block, fewer when that would not give every SM two blocks - a guided decode step's 512
// rows made 64 blocks of 8 warps, leaving half an H200's 132 SMs idle.
struct RowGrid {
  unsigned blocks, threads;
};
inline RowGrid row_grid(int64_t rows) {
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
// Blocks of the block-per-row-group backward kernels (one partial row of the affine gradients each):
// 8 per SM of an H100/H200.
constexpr int64_t kBackwardRowBlocks = 1056;

// ---------------------------------------------------------------- dispatch

// Calls f(TX{}, T{}) with the element types named by the run-time dtypes.
template <typename F>
inline void dispatch2(DType tx, DType t, F&& f) {
  if (tx == DType::f32 && t == DType::f32) return f(float{}, float{});
  if (tx == DType::f32 && t == DType::bf16) return f(float{}, __nv_bfloat16{});
  if (tx == DType::bf16 && t == DType::bf16) return f(__nv_bfloat16{}, __nv_bfloat16{});
  throw std::runtime_error("block kernels: unsupported dtype combination");
}

// Calls f(std::integral_constant<int,V>{}) with the first V of Vs (ascending) that is >= need.
template <int... Vs, typename F>
inline void dispatch_at_least(int need, int width, F&& f) {
  bool done = false;
  ((done = done || (need <= Vs && (f(std::integral_constant<int, Vs>{}), true))), ...);
  if (!done)
    throw std::runtime_error("block kernels: width " + std::to_string(width) + " > " + std::to_string(kMaxWidth));
}

// K = ceil(width/32) values per lane (per-element kernels), G = ceil(width/128) groups of four.
template <typename F>
inline void dispatch_width(int width, F&& f) {
  dispatch_at_least<1, 2, 4, 8, 16, 24, 32, 40, 48, 64>((width + 31) / 32, width, f);
}
template <typename F>
inline void dispatch_groups(int width, F&& f) {
  dispatch_at_least<1, 2, 4, 6, 8, 10, 12, 16>((width + 127) / 128, width, f);
}

// Calls f(integral_constant<L>{}, integral_constant<P>{}) for L = hd/8 lanes per row (hd % 8 == 0,
// L one of the listed counts, P = L rounded up to a power of two); false when hd has no such L.
constexpr int pow2_at_least(int n) { return n <= 1 ? 1 : 2 * pow2_at_least((n + 1) / 2); }
template <int... Ls, typename F>
inline bool dispatch_lanes_of(int lanes, F&& f) {
  bool done = false;
  ((done = done || (lanes == Ls && (f(std::integral_constant<int, Ls>{},
                                      std::integral_constant<int, pow2_at_least(Ls)>{}),
                                    true))),
   ...);
  return done;
}
template <typename F>
inline bool dispatch_lanes(int hd, F&& f) {
  // head dims 8..64 every 8, then 80, 88, 96, 128, 256 (rar_b 48, rar_l 64, rar_xl 80, rar_xxl 88)
  return hd % 8 == 0 && dispatch_lanes_of<1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 16, 32>(hd / 8, f);
}

// Rows of `width` elements of `bytes` each starting at p (row stride `stride` elements) can be
// read four elements at a time.
inline bool vec4_ok(const void* p, int64_t stride, int width, int bytes) {
  return width % 4 == 0 && stride % 4 == 0 && aligned(p, 4 * bytes);
}
int bytes_of(DType t) { return t == DType::f32 ? 4 : 2; }
// ... eight elements (16 bytes for bf16, two 16-byte accesses for float) at a time.
inline bool vec8_ok(const void* p, int64_t stride, int width) {
  return width % 8 == 0 && stride % 8 == 0 && aligned(p, 16);
}

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

// Sums of a and b over the whole block (blockDim a multiple of 32), for a kernel that walks rows in
// a loop: `parity` alternates between iterations, so one iteration's writes to the shared partials
// never overtake another warp's reads of the previous iteration's (one barrier per call).
__device__ __forceinline__ float2 block_sum2(float a, float b, int parity) {
  __shared__ float2 part[2][32];
  a = warp_sum(a);
  b = warp_sum(b);
  const int lane = threadIdx.x & 31;
  if (lane == 0) part[parity][threadIdx.x >> 5] = make_float2(a, b);
  __syncthreads();
  const float2 t = lane < static_cast<int>(blockDim.x >> 5) ? part[parity][lane] : make_float2(0.f, 0.f);
  return make_float2(warp_sum(t.x), warp_sum(t.y));
}

}  // namespace
}  // namespace rar::kernels
