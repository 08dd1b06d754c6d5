// fused.h — the choice between the two paths every op in model/ops has (OpPath):
//   plain: LibTorch ops as the model reads (the reference; every device, every dtype);
//   fused: CUDA kernels (kernels/, wrapped in model/ops/cuda/), taken on CUDA tensors in a CUDA
//          build for the inputs they support; tested against plain.
// Both give the same values up to float rounding (the fused path rounds once to bf16 where the
// plain path rounds after every op). Also the two dtype helpers every op shares.
#pragma once
#include <torch/torch.h>

namespace rar::model {

// Which implementation an op runs: the plain LibTorch ops (the reference; every device, every
// dtype) or the fused CUDA kernels where they apply (CUDA tensors in a CUDA build, the dtypes and
// shapes they support; elsewhere the plain path all the same). A value, never process state: a
// module holds its own (GeneratorImpl::use_path, VQModelImpl::use_path; `rar bench train --plain`)
// and passes it to every op it calls.
enum class OpPath { plain, fused };
// Whether this build has the CUDA kernels at all.
bool fused_kernels_built();

// The dtype the matmuls run in: autocast's when it is on for t's device (bf16 training), else t's
// own; to_compute casts t to it.
at::ScalarType compute_dtype(const torch::Tensor& t);
torch::Tensor to_compute(const torch::Tensor& t);

// A value used by every block in the matmul dtype, cast once: returns `cast` (= src in the matmul
// dtype, computed by the caller without gradients) as a use of `src`, whose gradient comes back in
// src's dtype. Each block takes one such use, so the blocks' gradients add up in float32 like the
// reference's per-block casts, while the forward reads one shared bf16 copy (no per-block cast,
// nothing extra kept per block).
torch::Tensor shared_cast(const torch::Tensor& src, const torch::Tensor& cast);

}  // namespace rar::model
