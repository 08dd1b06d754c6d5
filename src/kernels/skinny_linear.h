// skinny_linear.h — a linear layer for a handful of rows (CUDA builds only): the decode step of one
// or a few images, where a matrix product has M = 2-8 rows (an image and its guidance row) and its
// time is the time to read the weight once. cuBLAS tiles such a product for large M; this kernel
// streams each weight row once with every SM busy: a block of kSkinnyThreads threads takes
// kSkinnyRowsPerBlock output columns, its threads split K in 16-byte chunks (several in flight each),
// and the block sums their partial dot products. The wrapper and its plain path (at::linear) live in
// model/ops/decode_ops and model/ops/cuda/decode_ops_cuda.cpp.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace rar::kernels {

constexpr int kSkinnyMaxRows = 8;  // M, the rows of x, at most this
constexpr int kSkinnyThreads = 128;
constexpr int kSkinnyRowsPerBlock = 4;

// y [M,N] = x [M,K] · wᵀ (w [N,K]) + b [N] (b may be null), then the exact (erf) GELU with `gelu`;
// bf16 in and out, float accumulation. Needs 1 <= M <= kSkinnyMaxRows, K % 8 == 0, x and w
// contiguous and 16-byte aligned (skinny_linear_supported).
bool skinny_linear_supported(int64_t M, int64_t K, const void* x, const void* w);
void skinny_linear(const void* x, const void* w, const void* b, int64_t M, int64_t N, int64_t K, bool gelu, void* y,
                   cudaStream_t stream);

}  // namespace rar::kernels
