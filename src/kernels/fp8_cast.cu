// fp8_cast.cu — a training product's operand in fp8 (declared in block_kernels.h; the plain path
// it is tested against is model/ops/fp8.cpp's): one pass for the tensor's largest magnitude (current
// scaling only), one that scales, rounds and writes the layouts the scaled matmul wants (and, for
// delayed scaling, records the largest magnitude it saw). The scaled matmul takes its
// left operand row-major and its right one column-major, so a weight gradient gᵀ·a needs g and a
// transposed: the quantising pass writes the transposed layout from a shared-memory tile, in the
// same pass as (or instead of) the row-major one — no fp8 transpose copies afterwards.
#include <cuda_fp8.h>

#include "kernels/block_common.cuh"

namespace rar::kernels {
namespace {

// |x|'s float bits: for non-negative floats the unsigned order is the float order, NaN above +inf,
// so an integer max is the float max with NaN propagated (fmaxf would drop a NaN).
__device__ __forceinline__ unsigned abs_bits(float v) { return __float_as_uint(v) & 0x7fffffffu; }

__device__ __forceinline__ unsigned block_max(unsigned m) {
  __shared__ unsigned warps[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warps[warp] = m;
  __syncthreads();
  m = threadIdx.x < blockDim.x / 32 ? warps[threadIdx.x] : 0u;
  if (warp == 0) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  }
  return m;
}

// Grid-stride max of |x|: eight elements per load where the pointer allows (VEC), the rest one by one.
template <typename T, bool VEC>
__global__ void __launch_bounds__(256) amax_kernel(const T* __restrict__ x, int64_t n, unsigned* __restrict__ out) {
  unsigned m = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (VEC) {
    const int64_t vecs = n / 8;
    int64_t v = i;
    for (; v + 3 * stride < vecs; v += 4 * stride) {  // four 16-byte loads in flight per thread
      float f[4][8];
#pragma unroll
      for (int u = 0; u < 4; ++u) load8(x + 8 * (v + u * stride), f[u]);
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int j = 0; j < 8; ++j) m = max(m, abs_bits(f[u][j]));
    }
    for (; v < vecs; v += stride) {
      float f[8];
      load8(x + 8 * v, f);
#pragma unroll
      for (int j = 0; j < 8; ++j) m = max(m, abs_bits(f[j]));
    }
    done = vecs * 8;
  }
  for (int64_t e = done + i; e < n; e += stride) m = max(m, abs_bits(to_f(x[e])));
  m = block_max(m);
  if (threadIdx.x == 0 && m) atomicMax(out, m);
}

// Tiles of 128 rows x 64 columns, 256 threads. Load: thread t takes the 8-column vector t % 8 of
// rows t / 8 + 32k (k < 4), converts and writes its 8 bytes row-major (eight threads write a row's
// 64 contiguous bytes) and into the tile. Transposed: thread t takes column t % 64 and 32 rows
// (t / 64) of the tile and writes them as two 16-byte stores of out_t's row for that column.
constexpr int kTileRows = 128, kTileCols = 64, kPitch = kTileCols + 8;  // pitch keeps 8-byte alignment

template <Fp8Format F>
__device__ __forceinline__ uint8_t to_fp8(float v) {
  return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, F == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2);
}
template <Fp8Format F>
__host__ __device__ constexpr float largest() {
  return F == Fp8Format::e4m3 ? 448.f : 57344.f;
}

// col_part (may be null): the tile's float32 column sums of x, one row of [gridDim.x, cols] per row
// tile — thread t adds its four rows' values in row order, then thread c < 64 adds the 32 row lanes'
// sums of its column in lane order (a fixed order: the same bits every run). record (may be null):
// the tile's max |x| bits atomically max'ed into it (delayed scaling's history; amax_bits then points
// at another element of it, which no block of this grid writes).
template <typename T, Fp8Format F>
__global__ void __launch_bounds__(256)
    quantize_kernel(const T* __restrict__ x, int64_t rows, int64_t rows_pad, int64_t cols,
                    const unsigned* __restrict__ amax_bits, uint8_t* __restrict__ out, uint8_t* __restrict__ out_t,
                    float* __restrict__ scale_inv, float* __restrict__ col_part, unsigned* __restrict__ record) {
  __shared__ __align__(16) uint8_t tile[kTileRows][kPitch];
  float amax = __uint_as_float(*amax_bits);
  if (amax < 1e-30f) amax = 1e-30f;  // all zeros: a finite scale (a NaN amax stays NaN)
  const float scale = __fdiv_rn(largest<F>(), amax);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *scale_inv = __fdiv_rn(amax, largest<F>());
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTileRows, c0 = static_cast<int64_t>(blockIdx.y) * kTileCols;
  const int vec = threadIdx.x % 8;
  const int64_t c = c0 + 8 * vec;
  float sums[8] = {};
  unsigned m = 0;  // max |x| bits of this thread's values
#pragma unroll
  for (int k = 0; k < kTileRows / 32; ++k) {
    const int tr = threadIdx.x / 8 + 32 * k;
    const int64_t r = r0 + tr;
    uint8_t b[8] = {};
    if (r < rows && c < cols) {
      float f[8];
      load8(x + r * cols + c, f);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        b[j] = to_fp8<F>(__fmul_rn(f[j], scale));
        sums[j] += f[j];
        m = max(m, abs_bits(f[j]));
      }
    }
    uint2 packed;
    memcpy(&packed, b, 8);
    *reinterpret_cast<uint2*>(&tile[tr][8 * vec]) = packed;
    if (out && r < rows_pad && c < cols) *reinterpret_cast<uint2*>(out + r * cols + c) = packed;
  }
  if (record) {  // the same for every thread of the grid (block_max synchronises the block)
    m = block_max(m);
    if (threadIdx.x == 0 && m) atomicMax(record, m);
  }
  if (col_part) {  // the same for every thread of the grid
    __shared__ float lanes[32][kTileCols + 1];  // [row lane][column]; the pitch spreads a column's banks
#pragma unroll
    for (int j = 0; j < 8; ++j) lanes[threadIdx.x / 8][8 * vec + j] = sums[j];
    __syncthreads();
    if (threadIdx.x < kTileCols && c0 + threadIdx.x < cols) {
      float s = 0.f;
      for (int y = 0; y < 32; ++y) s += lanes[y][threadIdx.x];
      col_part[static_cast<int64_t>(blockIdx.x) * cols + c0 + threadIdx.x] = s;
    }
  }
  if (!out_t) return;
  __syncthreads();
  const int tc = threadIdx.x % kTileCols, part = threadIdx.x / kTileCols;  // 4 parts of 32 rows
  const int64_t col = c0 + tc;
  if (col >= cols) return;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int tr = 32 * part + 16 * h;
    const int64_t r = r0 + tr;
    if (r >= rows_pad) break;  // rows_pad is a multiple of 16: a 16-row piece is wholly in or out
    uint8_t b[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) b[j] = tile[tr + j][tc];
    uint4 packed;
    memcpy(&packed, b, 16);
    *reinterpret_cast<uint4*>(out_t + col * rows_pad + r) = packed;
  }
}

}  // namespace

void fp8_amax(DType t, const void* x, int64_t n, unsigned* amax_bits, cudaStream_t stream) {
  if (cudaMemsetAsync(amax_bits, 0, sizeof(unsigned), stream) != cudaSuccess) check_launch("fp8_amax memset");
  if (n == 0) return;
  static const int sms = [] {
    int d = 0, s = 0;
    if (cudaGetDevice(&d) != cudaSuccess || cudaDeviceGetAttribute(&s, cudaDevAttrMultiProcessorCount, d) != cudaSuccess)
      s = 132;
    return s > 0 ? s : 132;
  }();
  const int64_t blocks = std::min<int64_t>((n + 8 * 256 - 1) / (8 * 256), 4 * sms);
  const bool vec = aligned(x, 16);
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(x);
    if (vec)
      amax_kernel<T, true><<<blocks, 256, 0, stream>>>(p, n, amax_bits);
    else
      amax_kernel<T, false><<<blocks, 256, 0, stream>>>(p, n, amax_bits);
  };
  if (t == DType::f32)
    launch(float{});
  else
    launch(__nv_bfloat16{});
  check_launch("fp8_amax");
}

bool fp8_quantize_supported(const void* x, int64_t cols) { return cols > 0 && cols % 16 == 0 && aligned(x, 16); }

int64_t fp8_quantize_row_tiles(int64_t rows_pad) { return (rows_pad + kTileRows - 1) / kTileRows; }

void fp8_quantize(DType t, Fp8Format f, const void* x, int64_t rows, int64_t rows_pad, int64_t cols,
                  const unsigned* amax_bits, uint8_t* out, uint8_t* out_t, float* scale_inv, float* col_part,
                  unsigned* record, cudaStream_t stream) {
  if (!fp8_quantize_supported(x, cols) || rows_pad % 16 || rows_pad < rows)
    throw std::runtime_error("fp8_quantize: cols must be a multiple of 16, x 16-byte aligned, rows_pad a multiple of 16");
  const dim3 grid(static_cast<unsigned>(fp8_quantize_row_tiles(rows_pad)),
                  static_cast<unsigned>((cols + kTileCols - 1) / kTileCols));
  auto launch = [&](auto tag, auto fmt) {
    using T = decltype(tag);
    constexpr Fp8Format F = decltype(fmt)::value;
    quantize_kernel<T, F><<<grid, 256, 0, stream>>>(static_cast<const T*>(x), rows, rows_pad, cols, amax_bits, out,
                                                    out_t, scale_inv, col_part, record);
  };
  using E4 = std::integral_constant<Fp8Format, Fp8Format::e4m3>;
  using E5 = std::integral_constant<Fp8Format, Fp8Format::e5m2>;
  if (t == DType::f32)
    f == Fp8Format::e4m3 ? launch(float{}, E4{}) : launch(float{}, E5{});
  else
    f == Fp8Format::e4m3 ? launch(__nv_bfloat16{}, E4{}) : launch(__nv_bfloat16{}, E5{});
  check_launch("fp8_quantize");
}

}  // namespace rar::kernels
