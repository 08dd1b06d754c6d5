// common.h — what the CUDA halves of model/ops share (CUDA builds only): kernel dtypes, the
// current stream, layout checks and the float32 copies of small parameters the kernels read.
#pragma once
#include <cuda_runtime.h>

#include <torch/torch.h>

#include "kernels/block_kernels.h"

namespace rar::model::fused {

namespace K = rar::kernels;

K::DType kdt(const torch::Tensor& t);
bool kernel_dtype(const torch::Tensor& t);  // float32 or bf16
cudaStream_t stream();
// A [B,N,H] view whose rows (b,n) all sit `stride(1)` elements apart with contiguous columns (a
// chunk of a contiguous [B,N,6H] projection is one).
bool uniform_rows(const torch::Tensor& t);
// LayerNorm affine parameters, or an empty tensor for none (autograd Functions take no undefined inputs).
float* opt_ptr(const torch::Tensor& t);
// The kernels take float32 affine parameters; a bf16 model's (bf16 inference) are cast, a few
// hundred values.
bool affine_ok(const torch::nn::LayerNorm& ln);
// t as contiguous float32; a bf16 parameter's cast is made once and kept (see common.cpp).
torch::Tensor f32(const torch::Tensor& t);
float attention_scale(int64_t hd);  // 1/sqrt(hd)
// The next `increment` draws per thread of the default CUDA generator of `device` for one kernel
// (its Philox seed and offset; inside a graph capture, the device pointers replays read).
K::PhiloxArgs philox_args(const torch::Device& device, uint64_t increment);

}  // namespace rar::model::fused
