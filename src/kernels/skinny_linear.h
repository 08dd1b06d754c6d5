// skinny_linear.h — linear layers for a handful of rows (CUDA builds only): the decode step of one
// or a few images, where a matrix product has M = 2-8 rows (an image and its guidance row) and its
// time is the time to read the weight once. cuBLAS tiles such a product for large M; these kernels
// stream each weight row once with every SM busy: a block of kSkinnyThreads threads takes
// kSkinnyRowsPerBlock output columns, its threads split K in 16-byte chunks (several in flight each),
// and the block sums their partial dot products. Two variants fold the block's neighbours in, so
// that a transformer block is five kernels: the modulated LayerNorm in front (each block normalises
// the M input rows itself) and the gated residual behind. The wrappers and their plain paths
// (LibTorch compositions) live in model/ops/decode_ops and model/ops/cuda/decode_ops_cuda.cpp.
// `pdl`: launched with programmatic dependent launch (kernels/pdl.cuh): the kernel starts while the
// one before it finishes and streams its first weights meanwhile.
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

// Rows of an adaLN table (bf16 [rows, stride]): row m of a batch reads table row index[m] (int64
// on the device), its vectors at column offsets of that row.
struct AdaRows {
  const void* table = nullptr;
  int64_t stride = 0;
  const int64_t* index = nullptr;
};

// The modulated LayerNorm in front: z = (LN(x)·w_ln + b_ln)·(1 + scale) + shift, rounded to bf16
// (float statistics, two passes, as the ln_modulate kernels; w_ln/b_ln float or both null), with
// shift and scale at columns shift_col / scale_col of each row's table row; then y = z·wᵀ + b
// (+ GELU). x [M,K] bf16. Needs skinny_linear_supported and M·K floats of shared memory <= 47 KiB
// (skinny_ln_linear_supported: rar_xl's K = 1280 takes all 8 rows).
bool skinny_ln_linear_supported(int64_t M, int64_t K, const void* x, const void* w);
void skinny_ln_linear(const void* x, const float* w_ln, const float* b_ln, float eps, const AdaRows& ada,
                      int64_t shift_col, int64_t scale_col, const void* w, const void* b, int64_t M, int64_t N,
                      int64_t K, bool gelu, void* y, cudaStream_t stream, bool pdl = false);

// The gated residual behind: x [M,N] += gate · bf16(h·wᵀ + b), in place, rounded to bf16 (the gated
// residual op's arithmetic on the bf16-rounded product), the gate at column gate_col of each row's
// table row. h [M,K].
void skinny_linear_residual(const void* h, const void* w, const void* b, const AdaRows& ada, int64_t gate_col,
                            int64_t M, int64_t N, int64_t K, void* x, cudaStream_t stream, bool pdl = false);

}  // namespace rar::kernels
