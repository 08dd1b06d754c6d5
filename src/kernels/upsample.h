// upsample.h — the VQ decoder's nearest-neighbour 2x upsampling (DESIGN §10), NCHW or channels-last:
// a pure copy, each input element written to its 2x2 block. LibTorch's channels-last kernel is far
// from the copy rate (bench/RESULTS.md, "MaskGIT-VQGAN decoding"); these read 16 bytes and write
// them (twice or four times) with 16-byte accesses. CUDA builds only; the wrapper and the plain path live in model/ops/decoder_ops and model/ops/cuda/decoder_ops_cuda.cpp.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/block_kernels.h"

namespace rar::kernels {

// x: [N,C,H,W] contiguous (channels_last = false; needs W % 8 == 0) or [N,H,W,C] contiguous
// (channels_last = true, a channels-last [N,C,H,W] tensor; needs C % 8 == 0); y the same layout
// with 2H x 2W; both 16-byte aligned; fewer than 2^34 input elements (32-bit index math).
bool upsample_nearest2x_supported(int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last, const void* x,
                                  const void* y);
void upsample_nearest2x(DType t, const void* x, int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last,
                        void* y, cudaStream_t stream);

}  // namespace rar::kernels
