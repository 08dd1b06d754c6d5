// fused_unavailable.cpp — model/ops/fused_paths.h in a build without CUDA: no fused path is ever
// taken, so every op runs its plain path. (CUDA builds compile model/ops/cuda/ instead.)
#include "model/ops/fused_paths.h"

#include "util/error.h"

namespace rar::model::fused {

bool built() { return false; }

std::optional<torch::Tensor> ln_modulate(const torch::nn::LayerNorm&, const torch::Tensor&, const torch::Tensor&,
                                         const torch::Tensor&) {
  return std::nullopt;
}
std::optional<std::array<torch::Tensor, 2>> ln_modulate_branch(const torch::nn::LayerNorm&, const torch::Tensor&,
                                                               const torch::Tensor&, const torch::Tensor&) {
  return std::nullopt;
}
std::optional<std::array<torch::Tensor, 2>> adaln_split(const torch::nn::LinearImpl&, const torch::Tensor&) {
  return std::nullopt;
}
std::optional<torch::Tensor> dropout_bits(int64_t, double, const torch::Device&) { return std::nullopt; }
std::optional<torch::Tensor> gated_residual(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                            const torch::Tensor&, double) {
  return std::nullopt;
}
std::optional<std::array<torch::Tensor, 2>> gated_residual_ln_modulate(const torch::Tensor&, const torch::Tensor&,
                                                                       const torch::Tensor&,
                                                                       const torch::nn::LayerNorm&,
                                                                       const torch::Tensor&, const torch::Tensor&) {
  return std::nullopt;
}
std::optional<std::array<torch::Tensor, 3>> qk_norm_split(const torch::Tensor&, int64_t, const torch::nn::LayerNorm&,
                                                          const torch::nn::LayerNorm&) {
  return std::nullopt;
}
std::optional<torch::Tensor> linear(const torch::nn::LinearImpl&, const torch::Tensor&) { return std::nullopt; }
std::optional<torch::Tensor> bias_gradient(const torch::Tensor&) { return std::nullopt; }
std::optional<torch::Tensor> weight_gradient(const torch::Tensor&, const torch::Tensor&, at::ScalarType) {
  return std::nullopt;
}
std::optional<torch::Tensor> gelu_dropout_forward(const torch::Tensor&, const torch::Tensor&, double) {
  return std::nullopt;
}
torch::Tensor gelu_dropout_backward(const torch::Tensor&, const torch::Tensor&, double, torch::Tensor&, bool) {
  fail("gelu_dropout_backward: no CUDA kernels in this build");  // unreachable: the forward never runs the kernel
}
std::optional<Fp8Tensor> fp8_quantize(const torch::Tensor&, at::ScalarType, Fp8Layout, const Fp8Slot&, torch::Tensor*) {
  return std::nullopt;
}
std::optional<torch::Tensor> qk_norm_into_cache(const torch::Tensor&, int64_t, const torch::nn::LayerNorm&,
                                                const torch::nn::LayerNorm&, torch::Tensor&, torch::Tensor&,
                                                const torch::Tensor&) {
  return std::nullopt;
}
std::optional<torch::Tensor> decode_attention(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                              const torch::Tensor&, bool) {
  return std::nullopt;
}
std::optional<torch::Tensor> qk_norm_decode_attention(const torch::Tensor&, int64_t, const torch::nn::LayerNorm&,
                                                      const torch::nn::LayerNorm&, torch::Tensor&, torch::Tensor&,
                                                      const torch::Tensor&, bool, bool) {
  return std::nullopt;
}
std::optional<torch::Tensor> group_norm_silu(const torch::nn::GroupNorm&, const torch::Tensor&, bool) {
  return std::nullopt;
}
std::optional<torch::Tensor> upsample_nearest2x(const torch::Tensor&) { return std::nullopt; }

}  // namespace rar::model::fused
