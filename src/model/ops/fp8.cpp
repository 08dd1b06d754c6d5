// fp8.cpp — see fp8.h.
#include "model/ops/fp8.h"

#include <ATen/autocast_mode.h>

#include <cmath>

namespace rar::model {

namespace {

double largest(at::ScalarType format) { return format == torch::kFloat8_e5m2 ? 57344.0 : 448.0; }

struct Fp8LinearFn : torch::autograd::Function<Fp8LinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor w,
                               torch::Tensor b) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const int64_t K = x.size(-1), N = w.size(0), M = x.numel() / K;
    const auto dt = x.scalar_type();
    const auto xq = to_fp8(pad_rows16(x.reshape({M, K})), torch::kFloat8_e4m3fn);
    const auto wq = to_fp8(w, torch::kFloat8_e4m3fn);
    auto y = fp8_forward(xq, wq, b.to(dt), dt);
    ctx->save_for_backward({xq.data, xq.scale_inv, wq.data, wq.scale_inv});
    ctx->saved_data["rows"] = M;
    ctx->saved_data["dtype"] = static_cast<int64_t>(dt);
    auto sizes = x.sizes().vec();
    sizes.back() = N;
    return y.narrow(0, 0, M).view(sizes);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    auto s = ctx->get_saved_variables();
    const Fp8Tensor xq{s[0], s[1]}, wq{s[2], s[3]};
    const int64_t M = ctx->saved_data["rows"].toInt(), N = wq.data.size(0), K = wq.data.size(1);
    const auto dt = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    const auto g = grads[0].to(dt).reshape({M, N});
    const auto gq = to_fp8(pad_rows16(g), torch::kFloat8_e5m2);
    auto gx = fp8_grad_input(gq, wq, dt).narrow(0, 0, M);
    auto gw = fp8_grad_weight(gq, xq);  // (padded rows are zeros in both)
    auto gb = g.sum(0, false, torch::kFloat32);
    auto sizes = grads[0].sizes().vec();
    sizes.back() = K;
    return {gx.reshape(sizes), gw, gb};
  }
};

}  // namespace

Fp8Tensor to_fp8(const torch::Tensor& t, at::ScalarType format) {
  // amax in one reduction pass; an all-zero tensor keeps a finite scale
  const auto amax = at::linalg_vector_norm(t, INFINITY).to(torch::kFloat32).clamp_min(1e-30);
  const auto scale = largest(format) / amax;
  // |t · scale| <= the largest finite value by construction (up to the product's rounding, which
  // the conversion rounds back onto it)
  return {(t * scale).to(format), amax / largest(format)};
}

torch::Tensor pad_rows16(const torch::Tensor& t) {
  const int64_t m = t.size(0), pad = (16 - m % 16) % 16;
  return pad ? torch::cat({t, torch::zeros({pad, t.size(1)}, t.options())}) : t;
}

// The scaled matmul wants its left operand row-major and its right one column-major.
torch::Tensor fp8_forward(const Fp8Tensor& a, const Fp8Tensor& w, const torch::Tensor& bias, at::ScalarType out) {
  // the bias rides in the product's epilogue where the output is bf16 (the fp8 kernels' rule)
  const bool epilogue = bias.defined() && out == torch::kBFloat16;
  auto y = at::_scaled_mm(a.data, w.data.t(), a.scale_inv, w.scale_inv,
                          epilogue ? std::optional<torch::Tensor>(bias) : std::nullopt, std::nullopt, out);
  if (bias.defined() && !epilogue) y.add_(bias);
  return y;
}

torch::Tensor fp8_grad_input(const Fp8Tensor& g, const Fp8Tensor& w, at::ScalarType out) {
  // W [N, K] as the column-major right operand is Wᵀ stored row-major
  return at::_scaled_mm(g.data, w.data.t().contiguous().t(), g.scale_inv, w.scale_inv, std::nullopt, std::nullopt,
                        out);
}

torch::Tensor fp8_grad_weight(const Fp8Tensor& g, const Fp8Tensor& a) {
  return at::_scaled_mm(g.data.t().contiguous(), a.data.t().contiguous().t(), g.scale_inv, a.scale_inv,
                        std::nullopt, std::nullopt, torch::kFloat32);
}

bool fp8_product_fits(const torch::Tensor& x, const torch::Tensor& w) {
  return x.dim() >= 2 && w.dim() == 2 && x.size(-1) == w.size(1) && x.size(-1) % 16 == 0 && w.size(0) % 16 == 0 &&
         x.numel() > 0 && (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kFloat32);
}

torch::Tensor fp8_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return Fp8LinearFn::apply(x, w, b);
}

}  // namespace rar::model
