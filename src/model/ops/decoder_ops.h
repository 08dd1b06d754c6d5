// decoder_ops.h — the VQ decoder's memory-bound ops (model/vqgan): GroupNorm + SiLU and nearest
// 2x upsampling, each a plain LibTorch function with a fused CUDA path beside it (model/ops/fused.h;
// kernels/group_norm.cu, kernels/upsample.cu).
#pragma once
#include <torch/torch.h>

#include "model/ops/fused.h"

namespace rar::model {

// The VQ model's GroupNorm followed by SiLU (silu = false: the GroupNorm alone). Without gradients
// on CUDA, for a channels-last input (the decoder's `use_channels_last` mode): kernels/group_norm,
// two passes over the activations, output channels-last too (LibTorch's GroupNorm copies such
// input to NCHW and its output back). Otherwise LibTorch's group_norm (+ silu).
torch::Tensor group_norm_silu(const torch::nn::GroupNorm& gn, const torch::Tensor& x, OpPath path, bool silu = true);

// The VQ decoder's nearest-neighbour 2x upsampling of [N,C,H,W] (NCHW or channels-last; the output
// in the same layout). Without gradients on CUDA: kernels/upsample (16-byte copies); otherwise,
// and for shapes it does not take, LibTorch's interpolate. Exact either way (a copy).
torch::Tensor upsample_nearest2x(const torch::Tensor& x, OpPath path);

}  // namespace rar::model
