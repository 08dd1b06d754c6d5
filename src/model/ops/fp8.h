// fp8.h — the block's products in fp8 for training (`training.fp8: true`, off by default): the
// inputs and weights as e4m3, the output gradient as e5m2, each with one scale per tensor computed
// from the tensor itself ("current" scaling: the scale maps its largest magnitude to the format's
// largest finite value), multiplied by LibTorch's scaled matmul (Hopper's fp8 tensor cores on CUDA;
// an emulation on the CPU, which is what the CPU tests run). Master weights, AdamW and every other
// product stay as they are. Plain LibTorch ops: the casts are passes of their own.
#pragma once
#include <torch/torch.h>

namespace rar::model {

// t in fp8 with its scale: t ≈ data · scale_inv (data = round(t / scale_inv), saturating).
struct Fp8Tensor {
  torch::Tensor data;       // same shape, torch::kFloat8_e4m3fn or kFloat8_e5m2
  torch::Tensor scale_inv;  // float32 scalar: amax(t) / the format's largest finite value
};
Fp8Tensor to_fp8(const torch::Tensor& t, at::ScalarType format);

// The three products of y = a·Wᵀ in fp8, for a [M, K] with M a multiple of 16 (pad_rows16) and
// W [N, K] (the ops that own their backward use them: fp8_linear, the MLP tail's fc2):
torch::Tensor pad_rows16(const torch::Tensor& t);  // zero rows appended up to a multiple of 16
// a·Wᵀ + bias (bias in `out`'s dtype, or undefined) in `out`
torch::Tensor fp8_forward(const Fp8Tensor& a, const Fp8Tensor& w, const torch::Tensor& bias, at::ScalarType out);
torch::Tensor fp8_grad_input(const Fp8Tensor& g, const Fp8Tensor& w, at::ScalarType out);  // g·W
torch::Tensor fp8_grad_weight(const Fp8Tensor& g, const Fp8Tensor& a);                     // gᵀ·a in float32

// Whether x [.., K] · Wᵀ (W [N, K]) can run in fp8: K and N multiples of 16 (the scaled matmul's
// rule; the row count is padded to one).
bool fp8_product_fits(const torch::Tensor& x, const torch::Tensor& w);

// y = x·Wᵀ + b with x and W in e4m3, the gradients of x and W from the output gradient in e5m2
// (the weight's written in float32), the bias's summed in float32. y in x's dtype.
torch::Tensor fp8_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

}  // namespace rar::model
