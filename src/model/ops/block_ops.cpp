// block_ops.cpp — see block_ops.h. Each op: its plain path here, its fused path in
// model/ops/cuda/block_ops_cuda.cpp (through model/ops/fused_paths.h).
#include "model/ops/block_ops.h"

#include <ATen/autocast_mode.h>

#include "model/ops/fused_paths.h"

namespace rar::model {

namespace {

// ---------------------------------------------------------------- plain paths

torch::Tensor ln_modulate_plain(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& shift,
                                const torch::Tensor& scale) {
  // LayerNorm under autocast runs in float32; its output is cast to the matmul dtype right away so
  // the modulation (and what autograd saves for it) stays in bf16.
  auto n = to_compute(torch::nn::functional::layer_norm(
      x, torch::nn::functional::LayerNormFuncOptions({x.size(-1)})
             .weight(ln->weight)
             .bias(ln->bias)
             .eps(ln->options.eps())));
  return n * (1 + scale) + shift;
}

// LayerNorm of q or k over the head dim in the input's dtype (float32 statistics inside). Under
// autocast LayerNorm would upcast the bf16 input and write float32: same math, twice the traffic.
// The CUDA kernel wants the affine parameters in the input's dtype (a cast of hd values).
torch::Tensor head_norm(const torch::nn::LayerNorm& ln, const torch::Tensor& x) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  return at::layer_norm(x, {x.size(-1)}, ln->weight.to(x.scalar_type()), ln->bias.to(x.scalar_type()),
                        ln->options.eps());
}

std::array<torch::Tensor, 3> qk_norm_split_plain(const torch::Tensor& qkv, int64_t heads,
                                                 const torch::nn::LayerNorm& q_norm,
                                                 const torch::nn::LayerNorm& k_norm) {
  const int64_t B = qkv.size(0), N = qkv.size(1), hd = qkv.size(2) / 3 / heads;
  auto parts = qkv.view({B, N, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // [3,B,h,N,hd]
  return {head_norm(q_norm, parts[0]), head_norm(k_norm, parts[1]), parts[2]};
}

// GELU(u) · mask / (1 - p) (no mask: GELU(u)), in u's dtype.
torch::Tensor gelu_dropped(const torch::Tensor& u, const torch::Tensor& mask, double p) {
  auto a = at::gelu(u);
  if (mask.defined()) a = a * mask * (1.0 / (1.0 - p));
  return a;
}

// Linear in u's dtype whatever autocast says: the forward and the recomputation agree exactly.
torch::Tensor linear_in(const torch::Tensor& a, const torch::Tensor& w, const torch::Tensor& b) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  return at::linear(a, w.to(a.scalar_type()), b.defined() ? b.to(a.scalar_type()) : b);
}

struct GeluDropoutLinearFn : torch::autograd::Function<GeluDropoutLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor u, torch::Tensor w,
                               torch::Tensor b, torch::Tensor mask, double p) {
    ctx->saved_data["p"] = p;
    const bool has_mask = mask.numel() > 0;
    if (auto f = fused::gelu_dropout_forward(u, mask, p)) {  // GELU + dropout in one kernel, the mask as bits
      ctx->save_for_backward({u, w, b, f->bits});
      ctx->saved_data["packed"] = true;
      return linear_in(f->a, w, b);
    }
    ctx->save_for_backward({u, w, b, mask});
    ctx->saved_data["packed"] = false;
    return linear_in(gelu_dropped(u, has_mask ? mask : torch::Tensor(), p), w, b);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &u = s[0], &w = s[1], &b = s[2];
    const double p = ctx->saved_data["p"].toDouble();
    const auto dt = u.scalar_type();
    const int64_t in = u.size(-1), out = w.size(0);
    auto g = grads[0].to(dt).reshape({-1, out});
    torch::Tensor a, gu;
    if (ctx->saved_data["packed"].toBool()) {
      gu = g.mm(w.to(dt));  // the gradient of a, turned into u's in place
      a = fused::gelu_dropout_backward(u, s[3], p, gu);
      gu = gu.view(u.sizes());
    } else {
      const auto mask = s[3].numel() ? s[3] : torch::Tensor();
      a = gelu_dropped(u, mask, p).reshape({-1, in});  // recomputed
      auto ga = g.mm(w.to(dt)).view(u.sizes());
      if (mask.defined()) ga = ga * mask * (1.0 / (1.0 - p));
      gu = at::gelu_backward(ga, u);
    }
    auto gw = g.t().mm(a).to(w.scalar_type());
    auto gb = g.sum(0, false, torch::kFloat32).to(b.scalar_type());
    return {gu, gw, gb, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

// ---------------------------------------------------------------- the ops

torch::Tensor ln_modulate(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& shift,
                          const torch::Tensor& scale) {
  if (auto y = fused::ln_modulate(ln, x, shift, scale)) return *y;
  return ln_modulate_plain(ln, x, shift, scale);
}

torch::Tensor gated_residual(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y) {
  if (auto r = fused::gated_residual(x, gate, y)) return *r;
  return torch::addcmul(x, gate, y);
}

std::array<torch::Tensor, 2> gated_residual_ln_modulate(const torch::Tensor& x, const torch::Tensor& gate,
                                                        const torch::Tensor& y, const torch::nn::LayerNorm& ln,
                                                        const torch::Tensor& shift, const torch::Tensor& scale,
                                                        bool inference) {
  if (inference && !torch::GradMode::is_enabled())
    if (auto r = fused::gated_residual_ln_modulate(x, gate, y, ln, shift, scale)) return *r;
  auto x2 = gated_residual(x, gate, y);
  return {x2, ln_modulate(ln, x2, shift, scale)};
}

std::array<torch::Tensor, 3> qk_norm_split(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                           const torch::nn::LayerNorm& k_norm) {
  if (auto r = fused::qk_norm_split(qkv, heads, q_norm, k_norm)) return *r;
  return qk_norm_split_plain(qkv, heads, q_norm, k_norm);
}

torch::Tensor gelu_dropout_linear_plain(const torch::Tensor& u, const torch::Tensor& mask, double p,
                                        const torch::Tensor& w, const torch::Tensor& b) {
  return linear_in(gelu_dropped(u, mask, p), w, b);
}

torch::Tensor gelu_dropout_linear_saving(const torch::Tensor& u, const torch::Tensor& mask, double p,
                                         const torch::Tensor& w, const torch::Tensor& b) {
  const auto m = mask.defined() ? mask : torch::empty({0}, u.options().dtype(torch::kBool));
  return GeluDropoutLinearFn::apply(u, w, b, m, p);
}

torch::Tensor gelu_dropout_linear(const torch::Tensor& u, const torch::nn::LinearImpl& fc2, double p, bool training) {
  if (!training) return at::linear(at::gelu(u), fc2.weight, fc2.bias);
  // The mask is drawn the same way with or without gradients, so a recomputed block's
  // recomputation (gradients on) sees the mask its forward (gradients off) drew.
  torch::Tensor mask;
  if (p > 0) mask = torch::empty(u.sizes(), u.options().dtype(torch::kBool)).bernoulli_(1.0 - p);
  // The same op (and kernels) with or without gradients, so that a recomputed block's recomputed
  // forward repeats its first forward exactly.
  return gelu_dropout_linear_saving(u, mask, p, fc2.weight, fc2.bias);
}

std::array<torch::Tensor, 6> adaln_split6(const torch::nn::LinearImpl& lin, const torch::Tensor& silu_c,
                                          bool training) {
  const int64_t H = lin.weight.size(0) / 6;
  if (!training) {
    auto m = at::linear(silu_c, lin.weight, lin.bias).chunk(6, -1);
    return {m[0], m[1], m[2], m[3], m[4], m[5]};
  }
  // The weight in the matmul dtype first (autocast's cached cast of the parameter), so the row
  // gathers below move half the bytes and the matmuls need no cast of their own.
  const auto dev = silu_c.device().type();
  const bool ac = at::autocast::is_autocast_enabled(dev);
  const auto dt = ac ? at::autocast::get_autocast_dtype(dev) : lin.weight.scalar_type();
  const auto w = ac ? at::autocast::cached_cast(dt, lin.weight, dev) : lin.weight;
  const auto b = ac ? at::autocast::cached_cast(dt, lin.bias, dev) : lin.bias;
  // rows of W (and b): shift_a [0,H), scale_a gate_a [H,3H), shift_m [3H,4H), scale_m gate_m [4H,6H)
  auto pick = [](const torch::Tensor& t, int64_t r0, int64_t n0, int64_t r1, int64_t n1) {
    return torch::cat({t.narrow(0, r0, n0), t.narrow(0, r1, n1)});
  };
  auto shifts = at::linear(silu_c, pick(w, 0, H, 3 * H, H), pick(b, 0, H, 3 * H, H)).chunk(2, -1);
  auto kept = at::linear(silu_c, pick(w, H, 2 * H, 4 * H, 2 * H), pick(b, H, 2 * H, 4 * H, 2 * H)).chunk(4, -1);
  return {shifts[0], kept[0], kept[1], shifts[1], kept[2], kept[3]};
}

}  // namespace rar::model
