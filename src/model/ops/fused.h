// fused.h — the switch between the two paths every op in model/ops has:
//   plain: LibTorch ops as the model reads (the reference; every device, every dtype);
//   fused: CUDA kernels (kernels/, wrapped in model/ops/cuda/), taken on CUDA tensors in a CUDA
//          build while fused_kernels_enabled(), for the inputs they support; tested against plain.
// Both give the same values up to float rounding (the fused path rounds once to bf16 where the
// plain path rounds after every op). Also the two dtype helpers every op shares.
#pragma once
#include <torch/torch.h>

namespace rar::model {

// Global switch for the fused path (default on; off with RAR_FUSED=0 or `rar bench train --plain`).
bool fused_kernels_enabled();
void set_fused_kernels(bool on);
// Whether this build has the CUDA kernels at all.
bool fused_kernels_built();

// The dtype the matmuls run in: autocast's when it is on (bf16 training), else the tensor's own.
torch::Tensor to_compute(const torch::Tensor& t);

// A value used by every block in the matmul dtype, cast once: returns `cast` (= src in the matmul
// dtype, computed by the caller without gradients) as a use of `src`, whose gradient comes back in
// src's dtype. Each block takes one such use, so the blocks' gradients add up in float32 like the
// reference's per-block casts, while the forward reads one shared bf16 copy (no per-block cast,
// nothing extra kept per block).
torch::Tensor shared_cast(const torch::Tensor& src, const torch::Tensor& cast);

}  // namespace rar::model
