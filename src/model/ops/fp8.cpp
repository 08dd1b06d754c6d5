// fp8.cpp — see fp8.h.
#include "model/ops/fp8.h"

#include <ATen/autocast_mode.h>

#include <cmath>

namespace rar::model {

namespace {

double largest(at::ScalarType format) { return format == torch::kFloat8_e5m2 ? 57344.0 : 448.0; }

// The scaled matmul takes row counts that are multiples of 16: zero rows appended (their products
// are zeros, sliced off or adding nothing).
torch::Tensor pad_rows(const torch::Tensor& t) {
  const int64_t m = t.size(0), pad = (16 - m % 16) % 16;
  return pad ? torch::cat({t, torch::zeros({pad, t.size(1)}, t.options())}) : t;
}

// a [M, K] (row-major) · b [K, N] given as a column-major view (b.t() contiguous), scaled back.
torch::Tensor scaled_mm(const Fp8Tensor& a, const torch::Tensor& b_colmajor, const torch::Tensor& b_scale_inv,
                        at::ScalarType out, const std::optional<torch::Tensor>& bias = std::nullopt) {
  return at::_scaled_mm(a.data, b_colmajor, a.scale_inv, b_scale_inv, bias, std::nullopt, out);
}

struct Fp8LinearFn : torch::autograd::Function<Fp8LinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor w,
                               torch::Tensor b) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const int64_t K = x.size(-1), N = w.size(0), M = x.numel() / K;
    const auto dt = x.scalar_type();
    const auto xq = to_fp8(pad_rows(x.reshape({M, K})), torch::kFloat8_e4m3fn);
    const auto wq = to_fp8(w, torch::kFloat8_e4m3fn);
    // the bias rides in the product's epilogue where the output is bf16 (the fused kernel's rule)
    const bool epilogue = dt == torch::kBFloat16;
    auto y = scaled_mm(xq, wq.data.t(), wq.scale_inv, dt,
                       epilogue ? std::optional<torch::Tensor>(b.to(dt)) : std::nullopt);
    if (!epilogue) y.add_(b.to(dt));
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
    const auto gq = to_fp8(pad_rows(g), torch::kFloat8_e5m2);
    // dx = g · W: W [N, K] as the column-major right operand is Wᵀ stored row-major
    auto gx = scaled_mm(gq, wq.data.t().contiguous().t(), wq.scale_inv, dt).narrow(0, 0, M);
    // dW = gᵀ · x, in float32: gᵀ row-major, x column-major (padded rows are zeros in both)
    const Fp8Tensor gt{gq.data.t().contiguous(), gq.scale_inv};
    auto gw = scaled_mm(gt, xq.data.t().contiguous().t(), xq.scale_inv, torch::kFloat32);
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

bool fp8_product_fits(const torch::Tensor& x, const torch::Tensor& w) {
  return x.dim() >= 2 && w.dim() == 2 && x.size(-1) == w.size(1) && x.size(-1) % 16 == 0 && w.size(0) % 16 == 0 &&
         x.numel() > 0 && (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kFloat32);
}

torch::Tensor fp8_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return Fp8LinearFn::apply(x, w, b);
}

}  // namespace rar::model
