// fused.cpp — see fused.h.
#include "model/ops/fused.h"

#include "model/ops/fused_paths.h"

#include <ATen/autocast_mode.h>


namespace rar::model {

namespace {

struct SharedCastFn : torch::autograd::Function<SharedCastFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor src, torch::Tensor cast) {
    ctx->saved_data["dtype"] = static_cast<int64_t>(src.scalar_type());
    return cast.view_as(cast);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto dt = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grads[0].to(dt), torch::Tensor()};
  }
};

}  // namespace

bool fused_kernels_built() { return fused::built(); }

at::ScalarType compute_dtype(const torch::Tensor& t) {
  const auto dev = t.device().type();
  return at::autocast::is_autocast_enabled(dev) ? at::autocast::get_autocast_dtype(dev) : t.scalar_type();
}

torch::Tensor to_compute(const torch::Tensor& t) { return t.to(compute_dtype(t)); }

torch::Tensor shared_cast(const torch::Tensor& src, const torch::Tensor& cast) {
  if (cast.scalar_type() == src.scalar_type()) return src;
  if (!torch::GradMode::is_enabled() || !src.requires_grad()) return cast;
  return SharedCastFn::apply(src, cast.detach());
}

}  // namespace rar::model
