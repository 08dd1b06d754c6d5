// group_norm.h — GroupNorm (+ SiLU) of channels-last activations [N,H,W,C] (the VQ decoder in
// channels-last mode, DESIGN §10): one pass gathering each (image, group)'s sum and sum of squares,
// one pass normalising, applying the per-channel affine and, optionally, SiLU. LibTorch's GroupNorm
// copies channels-last input to NCHW and its output back, which cost more than the convolutions.
// CUDA builds only; the wrapper and the plain path live in model/ops/decoder_ops and model/ops/cuda/decoder_ops_cuda.cpp.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/block_kernels.h"

namespace rar::kernels {

// C % 4 == 0, (C / groups) % 4 == 0, groups <= 256, C <= 1024.
bool group_norm_nhwc_supported(int64_t C, int64_t groups);

// Doubles of workspace group_norm_nhwc needs (statistics and per-block partial sums).
int64_t group_norm_nhwc_workspace(int64_t N, int64_t HW, int64_t C, int64_t groups);

// x, y: [N, HW, C] contiguous (a channels-last [N,C,H,W] tensor), dtype t; gamma, beta: [C] float,
// 16-byte aligned. ws: group_norm_nhwc_workspace(...) doubles. Float math, one rounding to t;
// statistics summed in a fixed order (deterministic).
void group_norm_nhwc(DType t, const void* x, int64_t N, int64_t HW, int64_t C, int64_t groups, const float* gamma,
                     const float* beta, float eps, bool silu, void* y, double* ws, cudaStream_t stream);

}  // namespace rar::kernels
