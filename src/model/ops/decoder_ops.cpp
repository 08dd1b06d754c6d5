// decoder_ops.cpp — see decoder_ops.h. Each op: its plain path here, its fused path in
// model/ops/cuda/decoder_ops_cuda.cpp (through model/ops/fused_paths.h).
#include "model/ops/decoder_ops.h"

#include "model/ops/fused_paths.h"

namespace rar::model {

torch::Tensor group_norm_silu(const torch::nn::GroupNorm& gn, const torch::Tensor& x, OpPath path, bool silu) {
  if (path == OpPath::fused)
    if (auto y = fused::group_norm_silu(gn, x, silu)) return *y;
  const auto& o = gn->options;
  auto y = at::group_norm(x, o.num_groups(), gn->weight, gn->bias, o.eps());  // as GroupNormImpl::forward
  return silu ? torch::silu(y) : y;
}

torch::Tensor upsample_nearest2x(const torch::Tensor& x, OpPath path) {
  if (path == OpPath::fused)
    if (auto y = fused::upsample_nearest2x(x)) return *y;
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
}

}  // namespace rar::model
