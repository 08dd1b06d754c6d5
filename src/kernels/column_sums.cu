// column_sums.cu — a bias gradient: the float32 column sums of a bf16 gradient [rows, N] (declared in
// block_kernels.h), in place of ATen's sum(0), whose rate in the training step is in bench/RESULTS.md
// ("Training, third round"). Thread (x, y) of a block owns columns 8x..8x+7 for every R-th row
// of the rows its block walks, so a row is read with 16-byte loads and each thread keeps eight
// register sums; the R row lanes meet in shared memory and each block writes one partial row, which
// a second kernel adds up in a fixed order. A fixed grid (not the SM count) and fixed orders: the
// result is the same on every run and every GPU.
#include "kernels/block_common.cuh"

namespace rar::kernels {
namespace {

constexpr int kColumnSumBlocks = 264;  // two per SM of an H100/H200

__global__ void __launch_bounds__(1024) column_sums_partial(const __nv_bfloat16* __restrict__ g, int64_t rows, int N,
                                                            float* __restrict__ part) {
  extern __shared__ float lanes[];  // [R][N]
  const int c = 8 * threadIdx.x, R = blockDim.y;
  const bool on = c < N;
  float acc[8] = {};
  const int64_t step = static_cast<int64_t>(gridDim.x) * R;
  int64_t row = static_cast<int64_t>(blockIdx.x) * R + threadIdx.y;
  if (on) {
    // two rows per iteration: two 16-byte loads in flight per thread
    for (; row + step < rows; row += 2 * step) {
      float a[8], b[8];
      load8(g + row * N + c, a);
      load8(g + (row + step) * N + c, b);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] += a[j] + b[j];
    }
    if (row < rows) {
      float a[8];
      load8(g + row * N + c, a);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] += a[j];
    }
    store8(lanes + threadIdx.y * N + c, acc);
  }
  __syncthreads();
  if (threadIdx.y == 0 && on) {
    for (int y = 1; y < R; ++y) {
      float o[8];
      load8(lanes + y * N + c, o);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] += o[j];
    }
    store8(part + static_cast<int64_t>(blockIdx.x) * N + c, acc);
  }
}

// The partial rows added up: a block owns 32 columns; its 8 row lanes take every 8th partial row
// (four loads in flight each), then meet in shared memory in lane order.
constexpr int kTotalLanes = 8;
__global__ void column_sums_total(const float* __restrict__ part, int blocks, int N, float* __restrict__ out) {
  __shared__ float lanes[kTotalLanes][32];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (c < N) {
    int b = threadIdx.y;
    for (; b + 3 * kTotalLanes < blocks; b += 4 * kTotalLanes) {
      const float p0 = part[static_cast<int64_t>(b) * N + c];
      const float p1 = part[static_cast<int64_t>(b + kTotalLanes) * N + c];
      const float p2 = part[static_cast<int64_t>(b + 2 * kTotalLanes) * N + c];
      const float p3 = part[static_cast<int64_t>(b + 3 * kTotalLanes) * N + c];
      s += (p0 + p1) + (p2 + p3);
    }
    for (; b < blocks; b += kTotalLanes) s += part[static_cast<int64_t>(b) * N + c];
  }
  lanes[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < N) {
    for (int y = 1; y < kTotalLanes; ++y) s += lanes[y][threadIdx.x];
    out[c] = s;
  }
}

unsigned column_threads(int N) { return static_cast<unsigned>((N / 8 + 31) / 32 * 32); }

}  // namespace

bool column_sums_supported(const void* g, int64_t rows, int64_t N) {
  return rows > 0 && N > 0 && N % 8 == 0 && N / 8 <= 1024 && aligned(g, 16);
}

int64_t column_sums_partial_rows(int64_t rows) { return std::min<int64_t>(rows, kColumnSumBlocks); }

void column_sums_of_partials(const float* part, int64_t blocks, int N, float* out, cudaStream_t stream) {
  column_sums_total<<<(N + 31) / 32, dim3(32, kTotalLanes), 0, stream>>>(part, static_cast<int>(blocks), N, out);
  check_launch("column_sums_total");
}

void column_sums(const void* g, int64_t rows, int N, float* part, float* out, cudaStream_t stream) {
  if (!column_sums_supported(g, rows, N)) throw std::runtime_error("column_sums: N not a multiple of 8 up to 8192, or g not 16-byte aligned");
  const unsigned tx = column_threads(N), R = std::max(1u, 1024u / tx);
  const auto blocks = static_cast<unsigned>(column_sums_partial_rows(rows));
  column_sums_partial<<<blocks, dim3(tx, R), R * N * sizeof(float), stream>>>(static_cast<const __nv_bfloat16*>(g),
                                                                             rows, N, part);
  check_launch("column_sums_partial");
  column_sums_total<<<(N + 31) / 32, dim3(32, kTotalLanes), 0, stream>>>(part, static_cast<int>(blocks), N, out);
  check_launch("column_sums_total");
}

}  // namespace rar::kernels
