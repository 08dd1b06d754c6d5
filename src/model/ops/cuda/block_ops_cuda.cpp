// block_ops_cuda.cpp — the fused path of model/ops/block_ops (CUDA builds only): autograd
// Functions over the kernels of kernels/block_kernels.h, one kernel forward and one backward each.
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "model/ops/cuda/common.h"
#include "model/ops/block_ops.h"
#include "model/ops/fused.h"
#include "model/ops/fused_paths.h"

namespace rar::model::fused {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// LayerNorm + modulation, one kernel each way. The kernels' calls are shared with LnModulateBranchFn.
torch::Tensor ln_modulate_run(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                              const torch::Tensor& b, const torch::Tensor& shift, const torch::Tensor& scale,
                              double eps) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t H = x.size(-1), rows = x.numel() / H;
  auto y = torch::empty(x.sizes(), x.options().dtype(shift.scalar_type()));
  auto mean = torch::empty({rows}, x.options().dtype(torch::kFloat32));
  auto rstd = torch::empty_like(mean);
  K::ln_modulate_forward(kdt(x), kdt(shift), x.data_ptr(), rows, static_cast<int>(H), opt_ptr(w), opt_ptr(b),
                         shift.data_ptr(), shift.stride(1), scale.data_ptr(), scale.stride(1), static_cast<float>(eps),
                         y.data_ptr(), mean.data_ptr<float>(), rstd.data_ptr<float>(), stream());
  ctx->save_for_backward({x, w, b, scale, mean, rstd});
  return y;
}
// {gx (+ g_residual when defined), gw, gb, gshift, gscale}
std::array<torch::Tensor, 5> ln_modulate_grads(AutogradContext* ctx, const torch::Tensor& grad_y,
                                               const torch::Tensor& g_residual) {
  auto s = ctx->get_saved_variables();
  const auto &x = s[0], &w = s[1], &b = s[2], &scale = s[3], &mean = s[4], &rstd = s[5];
  c10::cuda::CUDAGuard guard(x.device());
  auto gy = grad_y.defined() ? grad_y.to(scale.scalar_type()).contiguous() : torch::zeros(x.sizes(), scale.options());
  const auto gadd = g_residual.defined() ? g_residual.to(x.scalar_type()).contiguous() : torch::Tensor();
  const int64_t H = x.size(-1), rows = x.numel() / H;
  auto gx = torch::empty_like(x);
  auto gscale = torch::empty(x.sizes(), gy.options());
  torch::Tensor gw_part, gb_part;
  const bool affine = w.numel() > 0;
  if (affine) {
    gw_part = torch::empty({K::ln_modulate_partial_rows(rows), H}, mean.options());
    gb_part = torch::empty_like(gw_part);
  }
  K::ln_modulate_backward(kdt(x), kdt(scale), gy.data_ptr(), x.data_ptr(), mean.data_ptr<float>(),
                          rstd.data_ptr<float>(), opt_ptr(w), opt_ptr(b), scale.data_ptr(), scale.stride(1), rows,
                          static_cast<int>(H), gx.data_ptr(), opt_ptr(gadd), gscale.data_ptr(), opt_ptr(gw_part),
                          opt_ptr(gb_part), stream());
  torch::Tensor gw, gb;
  if (affine) {
    gw = gw_part.sum(0);
    gb = gb_part.sum(0);
  }
  return {gx, gw, gb, gy, gscale};
}

struct LnModulateFn : torch::autograd::Function<LnModulateFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor w, torch::Tensor b,
                               torch::Tensor shift, torch::Tensor scale, double eps) {
    return ln_modulate_run(ctx, x, w, b, shift, scale, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [gx, gw, gb, gshift, gscale] = ln_modulate_grads(ctx, grads[0], torch::Tensor());
    return {gx, gw, gb, gshift, gscale, torch::Tensor()};
  }
};

// {x, ln_modulate(x)}: the residual stream's two uses as one op, so that the gradient its residual
// use sends back (output 0's) is added to the norm's inside the backward kernel. Separately,
// autograd adds the two float32 gradients in a pass of its own (bench/RESULTS.md, "Training, third
// round"). Output 0 is x itself (autograd returns an unmodified input as a view of it).
struct LnModulateBranchFn : torch::autograd::Function<LnModulateBranchFn> {
  static variable_list forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor w, torch::Tensor b,
                               torch::Tensor shift, torch::Tensor scale, double eps) {
    ctx->set_materialize_grads(false);
    return {x, ln_modulate_run(ctx, x, w, b, shift, scale, eps)};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [gx, gw, gb, gshift, gscale] = ln_modulate_grads(ctx, grads[1], grads[0]);
    return {gx, gw, gb, gshift, gscale, torch::Tensor()};
  }
};

// x + gate · dropout(y): one kernel each way; bits (empty: no dropout) is the mask, kept for backward.
struct GatedResidualFn : torch::autograd::Function<GatedResidualFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor gate, torch::Tensor y,
                               torch::Tensor bits, double p) {
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t H = y.size(-1), rows = y.numel() / H;
    const float scale = bits.numel() ? static_cast<float>(1.0 / (1.0 - p)) : 1.f;
    auto out = torch::empty(x.sizes(), x.options());
    K::gated_residual_forward(kdt(x), kdt(y), x.data_ptr(), gate.data_ptr(), gate.stride(1), y.data_ptr(),
                              bits.numel() ? bits.data_ptr<uint8_t>() : nullptr, scale, rows, static_cast<int>(H),
                              out.data_ptr(), stream());
    ctx->save_for_backward({gate, y, bits});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["scale"] = static_cast<double>(scale);
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &gate = s[0], &y = s[1], &bits = s[2];
    c10::cuda::CUDAGuard guard(y.device());
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    auto g = grads[0].to(x_dtype).contiguous();
    const int64_t H = y.size(-1), rows = y.numel() / H;
    auto ggate = torch::empty(y.sizes(), y.options());
    auto gy = torch::empty_like(ggate);
    K::gated_residual_backward(kdt(g), kdt(y), g.data_ptr(), gate.data_ptr(), gate.stride(1), y.data_ptr(),
                               bits.numel() ? bits.data_ptr<uint8_t>() : nullptr,
                               static_cast<float>(ctx->saved_data["scale"].toDouble()), rows, static_cast<int>(H),
                               ggate.data_ptr(), gy.data_ptr(), stream());
    return {g, ggate, gy, torch::Tensor(), torch::Tensor()};
  }
};

struct QkNormSplitFn : torch::autograd::Function<QkNormSplitFn> {
  static variable_list forward(AutogradContext* ctx, torch::Tensor qkv, torch::Tensor wq, torch::Tensor bq,
                               torch::Tensor wk, torch::Tensor bk, int64_t heads, double eps) {
    c10::cuda::CUDAGuard guard(qkv.device());
    const int64_t B = qkv.size(0), N = qkv.size(1), hd = qkv.size(2) / 3 / heads;
    auto q = torch::empty({B, N, heads, hd}, qkv.options());
    auto k = torch::empty_like(q), v = torch::empty_like(q);
    auto mean = torch::empty({B * N * 2 * heads}, qkv.options().dtype(torch::kFloat32));
    auto rstd = torch::empty_like(mean);
    K::qk_norm_split_forward(kdt(qkv), qkv.data_ptr(), B, N, static_cast<int>(heads), static_cast<int>(hd),
                             wq.data_ptr<float>(), bq.data_ptr<float>(), wk.data_ptr<float>(), bk.data_ptr<float>(),
                             static_cast<float>(eps), q.data_ptr(), k.data_ptr(), v.data_ptr(),
                             mean.data_ptr<float>(), rstd.data_ptr<float>(), stream());
    ctx->save_for_backward({qkv, wq, wk, mean, rstd});
    ctx->saved_data["heads"] = heads;
    return {q, k, v};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &qkv = s[0], &wq = s[1], &wk = s[2], &mean = s[3], &rstd = s[4];
    c10::cuda::CUDAGuard guard(qkv.device());
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const int64_t B = qkv.size(0), N = qkv.size(1), hd = qkv.size(2) / 3 / heads;
    auto grad = [&](int i) {
      return grads[i].defined() ? grads[i].to(qkv.scalar_type()).contiguous()
                                : torch::zeros({B, N, heads, hd}, qkv.options());
    };
    auto gq = grad(0), gk = grad(1), gv = grad(2);
    auto gqkv = torch::empty_like(qkv);
    auto part = torch::empty({K::qk_norm_partial_rows(B * N), 4, hd}, mean.options());
    K::qk_norm_split_backward(kdt(qkv), gq.data_ptr(), gk.data_ptr(), gv.data_ptr(), qkv.data_ptr(),
                              mean.data_ptr<float>(), rstd.data_ptr<float>(), wq.data_ptr<float>(),
                              wk.data_ptr<float>(), B, N, static_cast<int>(heads), static_cast<int>(hd),
                              gqkv.data_ptr(), part.data_ptr<float>(), stream());
    auto sums = part.sum(0);  // [4, hd]
    return {gqkv, sums[0], sums[1], sums[2], sums[3], torch::Tensor(), torch::Tensor()};
  }
};

// y = x·Wᵀ + b with the weight cast to bf16 here (as autocast would) and both parameter gradients
// written in float32 directly: the weight's by the product itself (mm with a float32 output), the
// bias's summed in float32. Through at::linear under autocast they came back in bf16, transposed,
// and were cast (and made contiguous) by two more kernels per parameter.
struct LinearFn : torch::autograd::Function<LinearFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor w, torch::Tensor b) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto wb = w.to(x.scalar_type());
    ctx->save_for_backward({x, wb});
    return at::linear(x, wb, b.to(x.scalar_type()));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &x = s[0], &wb = s[1];
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const int64_t in = wb.size(1), out = wb.size(0);
    const auto g = grads[0].to(x.scalar_type()).reshape({-1, out});
    auto gx = g.mm(wb).view(x.sizes());
    auto gw = *weight_gradient(g, x.reshape({-1, in}), torch::kFloat32);
    auto gb = *bias_gradient(g);
    return {gx, gw, gb};
  }
};

// A block's adaLN projection in a bf16 training step: the two products of adaln_split6 (the shifts'
// rows of W and the others'), with the parameter gradients written in float32 directly into W's row
// order, and x's gradient as one product plus an accumulating one. Through at::linear on row
// gathers of autocast's cached cast, each gradient row block came back through a zero-filled
// [6H,H] bf16 tensor per gather, three bf16 adds, a cast to float32 and a bf16 add of the two
// input gradients (bench/RESULTS.md, "Training, third round").
struct AdalnSplitFn : torch::autograd::Function<AdalnSplitFn> {
  static variable_list forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor w, torch::Tensor b) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto dt = x.scalar_type();
    const auto [ws, wk] = adaln_split_rows(w.to(dt));
    const auto [bs, bk] = adaln_split_rows(b.to(dt));
    ctx->save_for_backward({x, ws, wk});
    return {at::linear(x, ws, bs), at::linear(x, wk, bk)};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &x = s[0], &ws = s[1], &wk = s[2];
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const int64_t H = x.size(-1);
    const auto dt = x.scalar_type();
    const auto x2 = x.reshape({-1, H});
    const auto g2 = grads[0].to(dt).reshape({-1, 2 * H}), g4 = grads[1].to(dt).reshape({-1, 4 * H});
    const auto gws = *weight_gradient(g2, x2, torch::kFloat32), gwk = *weight_gradient(g4, x2, torch::kFloat32);
    const auto bs = *bias_gradient(g2), bk = *bias_gradient(g4);
    auto gx = g2.mm(ws);
    gx.addmm_(g4, wk);
    return {gx.view(x.sizes()), adaln_join_rows(gws, gwk), adaln_join_rows(bs, bk)};
  }
};

// The dtype of the plain path's modulation result: the normalised value (autocast's dtype, else
// x's) promoted with shift and scale. The fused path writes shift's dtype, so it must be that.
at::ScalarType plain_modulate_dtype(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  return at::promote_types(at::promote_types(compute_dtype(x), shift.scalar_type()), scale.scalar_type());
}

// What the LN-modulation kernels take (ln_modulate's fused path, and gated_residual_ln_modulate's).
bool ln_modulate_fusable(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& shift,
                         const torch::Tensor& scale) {
  return x.is_cuda() && x.dim() == 3 && x.size(-1) <= kernels::kMaxWidth &&
         kernel_dtype(x) && kernel_dtype(shift) && shift.scalar_type() == scale.scalar_type() &&
         plain_modulate_dtype(x, shift, scale) == shift.scalar_type() &&
         !(x.scalar_type() == torch::kBFloat16 && shift.scalar_type() == torch::kFloat32) &&
         shift.sizes() == x.sizes() && scale.sizes() == x.sizes() && uniform_rows(shift) && uniform_rows(scale) &&
         affine_ok(ln);
}
// What the gated-residual kernels take (gated_residual's fused path, and gated_residual_ln_modulate's).
bool gated_residual_fusable(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y) {
  return x.is_cuda() && x.dim() == 3 && kernel_dtype(x) && kernel_dtype(y) &&
         gate.scalar_type() == y.scalar_type() &&
         !(x.scalar_type() == torch::kBFloat16 && y.scalar_type() == torch::kFloat32) && gate.sizes() == x.sizes() &&
         y.sizes() == x.sizes() && uniform_rows(gate);
}

// GELU + dropout as one kernel each way, the mask as bits (n/8 bytes): u contiguous, float32 or
// bf16, a multiple of 8 elements, 16-byte aligned.
bool gelu_kernel_ok(const torch::Tensor& u, const torch::Tensor& bits) {
  return u.is_cuda() && kernel_dtype(u) && u.is_contiguous() &&
         (!bits.defined() || (bits.is_cuda() && bits.scalar_type() == torch::kUInt8 && bits.is_contiguous() &&
                              bits.numel() * 8 >= u.numel())) &&
         kernels::gelu_dropout_supported(kdt(u), u.data_ptr(), u.numel());
}
}  // namespace

std::optional<torch::Tensor> weight_gradient(const torch::Tensor& g, const torch::Tensor& a, at::ScalarType w_dtype) {
  if (g.is_cuda() && g.scalar_type() == torch::kBFloat16 && a.scalar_type() == torch::kBFloat16 &&
      w_dtype == torch::kFloat32)
    return at::mm(g.t(), a, torch::kFloat32);
  return std::nullopt;
}

std::optional<torch::Tensor> bias_gradient(const torch::Tensor& g) {
  const int64_t N = g.size(-1), rows = N ? g.numel() / N : 0;
  if (!(g.is_cuda() && g.scalar_type() == torch::kBFloat16 && g.is_contiguous() &&
        K::column_sums_supported(g.data_ptr(), rows, N)))
    return g.reshape({-1, N}).sum(0, false, torch::kFloat32);
  c10::cuda::CUDAGuard guard(g.device());
  const auto f = g.options().dtype(torch::kFloat32);
  auto part = torch::empty({K::column_sums_partial_rows(rows), N}, f);
  auto out = torch::empty({N}, f);
  K::column_sums(g.data_ptr(), rows, static_cast<int>(N), part.data_ptr<float>(), out.data_ptr<float>(), stream());
  return out;
}

std::optional<torch::Tensor> linear(const torch::nn::LinearImpl& l, const torch::Tensor& x) {
  const auto dev = torch::kCUDA;
  if (x.is_cuda() && torch::GradMode::is_enabled() && at::autocast::is_autocast_enabled(dev) &&
      at::autocast::get_autocast_dtype(dev) == torch::kBFloat16 && x.scalar_type() == torch::kBFloat16 &&
      l.weight.scalar_type() == torch::kFloat32 && l.bias.defined() && l.bias.scalar_type() == torch::kFloat32 &&
      x.dim() >= 2)
    return LinearFn::apply(x, l.weight, l.bias);
  return std::nullopt;
}

std::optional<std::array<torch::Tensor, 2>> adaln_split(const torch::nn::LinearImpl& lin, const torch::Tensor& silu_c) {
  const auto dev = torch::kCUDA;
  if (silu_c.is_cuda() && torch::GradMode::is_enabled() && at::autocast::is_autocast_enabled(dev) &&
      at::autocast::get_autocast_dtype(dev) == torch::kBFloat16 && silu_c.scalar_type() == torch::kBFloat16 &&
      lin.weight.scalar_type() == torch::kFloat32 && lin.bias.defined() &&
      lin.bias.scalar_type() == torch::kFloat32 && silu_c.dim() >= 2 && lin.weight.size(0) % 6 == 0) {
    auto out = AdalnSplitFn::apply(silu_c, lin.weight, lin.bias);
    return std::array<torch::Tensor, 2>{out[0], out[1]};
  }
  return std::nullopt;
}

std::optional<torch::Tensor> ln_modulate(const torch::nn::LayerNorm& ln, const torch::Tensor& x,
                                         const torch::Tensor& shift, const torch::Tensor& scale) {
  if (ln_modulate_fusable(ln, x, shift, scale)) {
    const auto none = torch::empty({0}, x.options().dtype(torch::kFloat32));
    return LnModulateFn::apply(x.contiguous(), ln->weight.defined() ? f32(ln->weight) : none,
                               ln->bias.defined() ? f32(ln->bias) : none, shift, scale, ln->options.eps());
  }
  return std::nullopt;
}

std::optional<std::array<torch::Tensor, 2>> ln_modulate_branch(const torch::nn::LayerNorm& ln, const torch::Tensor& x,
                                                               const torch::Tensor& shift,
                                                               const torch::Tensor& scale) {
  if (torch::GradMode::is_enabled() && x.requires_grad() && x.is_contiguous() &&
      ln_modulate_fusable(ln, x, shift, scale)) {
    const auto none = torch::empty({0}, x.options().dtype(torch::kFloat32));
    auto out = LnModulateBranchFn::apply(x, ln->weight.defined() ? f32(ln->weight) : none,
                                         ln->bias.defined() ? f32(ln->bias) : none, shift, scale, ln->options.eps());
    return std::array<torch::Tensor, 2>{out[0], out[1]};
  }
  return std::nullopt;
}

std::optional<torch::Tensor> dropout_bits(int64_t n, double p, const torch::Device& device) {
  if (!device.is_cuda()) return std::nullopt;
  c10::cuda::CUDAGuard guard(device);
  auto bits = torch::empty({(n + 7) / 8}, torch::TensorOptions(torch::kUInt8).device(device));
  K::dropout_bits(philox_args(device, K::dropout_bits_increment(n)), static_cast<float>(1.0 - p), n,
                  bits.data_ptr<uint8_t>(), stream());
  return bits;
}

std::optional<torch::Tensor> gated_residual(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y,
                                            const torch::Tensor& bits, double p) {
  const bool bits_ok = !bits.defined() || (bits.is_cuda() && bits.scalar_type() == torch::kUInt8 &&
                                           bits.is_contiguous() && bits.numel() * 8 >= y.numel());
  if (gated_residual_fusable(x, gate, y) && x.is_contiguous() && bits_ok) {
    const auto b = bits.defined() ? bits : torch::empty({0}, y.options().dtype(torch::kUInt8));
    return GatedResidualFn::apply(x, gate, y.contiguous(), b, p);
  }
  return std::nullopt;
}

std::optional<std::array<torch::Tensor, 2>> gated_residual_ln_modulate(const torch::Tensor& x, const torch::Tensor& gate,
                                                                       const torch::Tensor& y,
                                                                       const torch::nn::LayerNorm& ln,
                                                                       const torch::Tensor& shift,
                                                                       const torch::Tensor& scale) {
  const auto t = gate.scalar_type();
  if (x.is_contiguous() && shift.scalar_type() == t &&
      gated_residual_fusable(x, gate, y) && ln_modulate_fusable(ln, x, shift, scale)) {
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t H = x.size(-1), rows = x.numel() / H;
    const auto yc = y.contiguous();
    const auto w = ln->weight.defined() ? f32(ln->weight) : torch::Tensor();
    const auto b = ln->bias.defined() ? f32(ln->bias) : torch::Tensor();
    auto x_out = torch::empty_like(x);
    auto z = torch::empty(x.sizes(), x.options().dtype(t));
    if (K::residual_ln_modulate_supported(kdt(x), kdt(gate), x.data_ptr(), gate.data_ptr(), gate.stride(1),
                                          yc.data_ptr(), shift.data_ptr(), shift.stride(1), scale.data_ptr(),
                                          scale.stride(1), x_out.data_ptr(), z.data_ptr(), static_cast<int>(H),
                                          opt_ptr(w), opt_ptr(b))) {
      K::residual_ln_modulate_forward(kdt(x), kdt(gate), x.data_ptr(), gate.data_ptr(), gate.stride(1), yc.data_ptr(),
                                      rows, static_cast<int>(H), opt_ptr(w), opt_ptr(b), shift.data_ptr(),
                                      shift.stride(1), scale.data_ptr(), scale.stride(1),
                                      static_cast<float>(ln->options.eps()), x_out.data_ptr(), z.data_ptr(), stream());
      return std::array<torch::Tensor, 2>{x_out, z};
    }
  }
  return std::nullopt;
}

std::optional<std::array<torch::Tensor, 3>> qk_norm_split(const torch::Tensor& qkv, int64_t heads,
                                                          const torch::nn::LayerNorm& q_norm,
                                                          const torch::nn::LayerNorm& k_norm) {
  const int64_t hd = qkv.size(-1) / 3 / heads;
  if (qkv.is_cuda() && qkv.dim() == 3 && kernel_dtype(qkv) && hd <= kernels::kMaxWidth &&
      affine_ok(q_norm) && affine_ok(k_norm) && q_norm->weight.defined() && k_norm->weight.defined()) {
    auto out = QkNormSplitFn::apply(qkv.contiguous(), f32(q_norm->weight), f32(q_norm->bias), f32(k_norm->weight),
                                    f32(k_norm->bias), heads, q_norm->options.eps());
    // [B,N,heads,hd] -> [B,heads,N,hd] views (the layout attention kernels prefer)
    return std::array<torch::Tensor, 3>{out[0].transpose(1, 2), out[1].transpose(1, 2), out[2].transpose(1, 2)};
  }
  return std::nullopt;
}

std::optional<torch::Tensor> gelu_dropout_forward(const torch::Tensor& u, const torch::Tensor& bits, double p) {
  if (!gelu_kernel_ok(u, bits)) return std::nullopt;
  c10::cuda::CUDAGuard guard(u.device());
  auto a = torch::empty_like(u);
  K::gelu_dropout_forward(kdt(u), u.data_ptr(), bits.defined() ? bits.data_ptr<uint8_t>() : nullptr,
                          static_cast<float>(bits.defined() ? 1.0 / (1.0 - p) : 1.0), u.numel(), a.data_ptr(),
                          stream());
  return a;
}

torch::Tensor gelu_dropout_backward(const torch::Tensor& u, const torch::Tensor& bits, double p, torch::Tensor& g,
                                    bool recompute_a) {
  c10::cuda::CUDAGuard guard(u.device());
  auto a = recompute_a ? torch::empty_like(g) : torch::Tensor();
  K::gelu_dropout_backward(kdt(u), u.data_ptr(), bits.numel() ? bits.data_ptr<uint8_t>() : nullptr,
                           static_cast<float>(bits.numel() ? 1.0 / (1.0 - p) : 1.0), u.numel(), g.data_ptr(),
                           recompute_a ? a.data_ptr() : nullptr, stream());
  return a;
}

}  // namespace rar::model::fused
