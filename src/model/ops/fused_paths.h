// fused_paths.h — the fused (CUDA) path of every op in model/ops, as the plain-path files call it.
// Implemented in model/ops/cuda/*_cuda.cpp in a CUDA build, and by fused_unavailable.cpp (always
// "not taken") otherwise, so the ops' files hold no #ifdef. The op calls these only on its fused
// path (OpPath::fused); each returns the op's result when its kernels take these inputs (CUDA
// tensors, the dtypes and shapes they support), or nothing, and the caller runs the plain path.
#pragma once
#include <array>
#include <optional>

#include <torch/torch.h>

#include "model/ops/fp8.h"

namespace rar::model::fused {

bool built();

// ---- block ops (model/ops/block_ops.h)
// A training step's product under bf16 autocast (gradients on): parameter gradients in float32.
std::optional<torch::Tensor> linear(const torch::nn::LinearImpl& l, const torch::Tensor& x);
// gᵀ·a for a weight of dtype w_dtype, written in it by the product itself (bf16 g and a on CUDA,
// a float32 weight: no bf16 result and cast) — what `linear` does, for ops that own their backward.
std::optional<torch::Tensor> weight_gradient(const torch::Tensor& g, const torch::Tensor& a, at::ScalarType w_dtype);
// The float32 bias gradient of a product gradient g [.., N] (its column sums): on CUDA a bf16 g goes
// through the column-sum kernel (kernels/column_sums.cu), any other through ATen's sum in float32.
std::optional<torch::Tensor> bias_gradient(const torch::Tensor& g);
// adaln_split6's two training products {shifts [..,2H], the others [..,4H]} in a bf16-autocast step
// with gradients on (CUDA): the parameter gradients in float32, written in W's row order.
std::optional<std::array<torch::Tensor, 2>> adaln_split(const torch::nn::LinearImpl& lin, const torch::Tensor& silu_c);
std::optional<torch::Tensor> ln_modulate(const torch::nn::LayerNorm& ln, const torch::Tensor& x,
                                         const torch::Tensor& shift, const torch::Tensor& scale);
// {x, ln_modulate(x)} as one autograd op (block_ops.h ln_modulate_branch) when gradients flow to x:
// its backward adds x's other gradient inside the norm's backward kernel.
std::optional<std::array<torch::Tensor, 2>> ln_modulate_branch(const torch::nn::LayerNorm& ln, const torch::Tensor& x,
                                                               const torch::Tensor& shift, const torch::Tensor& scale);
// Dropout bits for n elements (block_ops.h dropout_bits) drawn on the device.
std::optional<torch::Tensor> dropout_bits(int64_t n, double p, const torch::Device& device);
// x + gate · dropout(y) with the mask `bits` (undefined: no dropout, p unused).
std::optional<torch::Tensor> gated_residual(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y,
                                            const torch::Tensor& bits, double p);
// Inference only (no autograd): one pass for x' = x + gate·y and ln_modulate(ln, x', shift, scale).
std::optional<std::array<torch::Tensor, 2>> gated_residual_ln_modulate(const torch::Tensor& x, const torch::Tensor& gate,
                                                                       const torch::Tensor& y,
                                                                       const torch::nn::LayerNorm& ln,
                                                                       const torch::Tensor& shift,
                                                                       const torch::Tensor& scale);
std::optional<std::array<torch::Tensor, 3>> qk_norm_split(const torch::Tensor& qkv, int64_t heads,
                                                          const torch::nn::LayerNorm& q_norm,
                                                          const torch::nn::LayerNorm& k_norm);
// GELU + dropout in one kernel: a = GELU(u)·keep/(1-p), the mask as bits (undefined: none).
std::optional<torch::Tensor> gelu_dropout_forward(const torch::Tensor& u, const torch::Tensor& bits, double p);
// Its backward: `g` holds the gradient of a ([rows, in], contiguous) and becomes u's in place;
// returns a, recomputed from u and the bits (recompute_a false: nothing, a is not written).
torch::Tensor gelu_dropout_backward(const torch::Tensor& u, const torch::Tensor& bits, double p, torch::Tensor& g,
                                    bool recompute_a = true);

// ---- fp8 operands (model/ops/fp8.h)
// t [rows, cols] (float32 or bf16 on CUDA, cols a multiple of 16) in fp8: the largest magnitude in
// one kernel (not with slot.scale_by: delayed scaling), the scaled, rounded layouts in another,
// which also max'es the slot's record (kernels/fp8_cast.cu). column_sums (may be null): also t's
// float32 column sums, added up by the second kernel as it reads t (deterministic).
std::optional<Fp8Tensor> fp8_quantize(const torch::Tensor& t, at::ScalarType format, Fp8Layout layout,
                                      const Fp8Slot& slot = {}, torch::Tensor* column_sums = nullptr);

// ---- decode ops (model/ops/decode_ops.h)
std::optional<torch::Tensor> qk_norm_into_cache(const torch::Tensor& qkv, int64_t heads,
                                                const torch::nn::LayerNorm& q_norm, const torch::nn::LayerNorm& k_norm,
                                                torch::Tensor& k_cache, torch::Tensor& v_cache,
                                                const torch::Tensor& slot);
std::optional<torch::Tensor> decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache,
                                              const torch::Tensor& v_cache, const torch::Tensor& last, bool warp);
// `split`: the split variant (8 warps per row and head) instead of the warp kernel.
std::optional<torch::Tensor> qk_norm_decode_attention(const torch::Tensor& qkv, int64_t heads,
                                                      const torch::nn::LayerNorm& q_norm,
                                                      const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache,
                                                      torch::Tensor& v_cache, const torch::Tensor& slot, bool warp,
                                                      bool split);

// ---- decoder ops (model/ops/decoder_ops.h)
std::optional<torch::Tensor> group_norm_silu(const torch::nn::GroupNorm& gn, const torch::Tensor& x, bool silu);
std::optional<torch::Tensor> upsample_nearest2x(const torch::Tensor& x);

}  // namespace rar::model::fused
