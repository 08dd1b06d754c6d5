// block_ops.cpp — see block_ops.h. Each op: its plain path here, its fused path in
// model/ops/cuda/block_ops_cuda.cpp (through model/ops/fused_paths.h).
#include "model/ops/block_ops.h"

#include <ATen/autocast_mode.h>

#include "model/ops/fp8.h"
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

// GELU(u) · keep / (1 - p) (no bits: GELU(u)), in u's dtype.
torch::Tensor gelu_dropped(const torch::Tensor& u, const torch::Tensor& bits, double p) {
  auto a = at::gelu(u);
  if (bits.defined()) a = a * unpack_bits(bits, u.sizes()) * (1.0 / (1.0 - p));
  return a;
}

// Linear in u's dtype whatever autocast says: the forward and the recomputation agree exactly.
torch::Tensor linear_in(const torch::Tensor& a, const torch::Tensor& w, const torch::Tensor& b) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  return at::linear(a, w.to(a.scalar_type()), b.defined() ? b.to(a.scalar_type()) : b);
}

// fc2(dropout(GELU(u))) forward: a = GELU(u)·mask in one kernel where the fused path takes it.
// Returns {the output, whether the kernel ran} (the backward recomputes a the same way).
std::pair<torch::Tensor, bool> gelu_dropout_linear_forward(const torch::Tensor& u, const torch::Tensor& w,
                                                           const torch::Tensor& b, const torch::Tensor& bits, double p,
                                                           bool fused_path) {
  const auto given = bits.numel() ? bits : torch::Tensor();
  if (auto a = fused_path ? fused::gelu_dropout_forward(u, given, p) : std::nullopt)  // GELU + dropout in one kernel
    return {linear_in(*a, w, b), true};
  return {linear_in(gelu_dropped(u, given, p), w, b), false};
}

// u's gradient from a's (ga [rows, in], contiguous): through the GELU + dropout kernel on the fused
// path (ga becomes u's in place; a is not written again), else LibTorch's GELU backward.
torch::Tensor gelu_dropout_input_grad(torch::Tensor ga, const torch::Tensor& u, const torch::Tensor& bits_or_empty,
                                      double p, bool fused) {
  if (fused) {
    fused::gelu_dropout_backward(u, bits_or_empty, p, ga, /*recompute_a=*/false);
    return ga.view(u.sizes());
  }
  auto g = ga.view(u.sizes());
  if (bits_or_empty.numel()) g = g * unpack_bits(bits_or_empty, u.sizes()) * (1.0 / (1.0 - p));
  return at::gelu_backward(g, u);
}

// Its gradients from the output's g: {u's [.., in] (u's shape), w's, b's} (GELU and dropout
// recomputed from u and the bits, by the kernel where the forward's ran). The parameter gradients
// take the op's path, not the kernel's: a width the kernel does not take still gets the fused
// path's float32 products, as the linear op's gradients do.
std::array<torch::Tensor, 3> gelu_dropout_linear_grads(const torch::Tensor& g_out, const torch::Tensor& u,
                                                       const torch::Tensor& w, const torch::Tensor& b,
                                                       const torch::Tensor& bits_or_empty, double p, bool kernel,
                                                       OpPath path) {
  const auto dt = u.scalar_type();
  const int64_t in = u.size(-1), out = w.size(0);
  auto g = g_out.to(dt).reshape({-1, out});
  const auto bits = bits_or_empty.numel() ? bits_or_empty : torch::Tensor();
  torch::Tensor a, gu;
  if (kernel) {
    gu = g.mm(w.to(dt));  // the gradient of a, turned into u's in place
    a = fused::gelu_dropout_backward(u, bits_or_empty, p, gu);
    gu = gu.view(u.sizes());
  } else {
    a = gelu_dropped(u, bits, p).reshape({-1, in});  // recomputed
    gu = gelu_dropout_input_grad(g.mm(w.to(dt)), u, bits_or_empty, p, false);
  }
  return {gu, weight_gradient(g, a, w.scalar_type(), path), bias_gradient(g, path).to(b.scalar_type())};
}

struct GeluDropoutLinearFn : torch::autograd::Function<GeluDropoutLinearFn> {
  // bits: the dropout mask, or an empty tensor (no dropout; autograd Functions take no undefined inputs)
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor u, torch::Tensor w,
                               torch::Tensor b, torch::Tensor bits, double p, bool fused_path) {
    ctx->saved_data["p"] = p;
    ctx->save_for_backward({u, w, b, bits});
    auto [y, kernel] = gelu_dropout_linear_forward(u, w, b, bits, p, fused_path);
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["fused"] = fused_path;
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto [gu, gw, gb] = gelu_dropout_linear_grads(grads[0], s[0], s[1], s[2], s[3], ctx->saved_data["p"].toDouble(),
                                                  ctx->saved_data["kernel"].toBool(),
                                                  ctx->saved_data["fused"].toBool() ? OpPath::fused : OpPath::plain);
    return {gu, gw, gb, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// The whole MLP, fc2(dropout(GELU(fc1(x)))), keeping x, fc1's weight in x's dtype and the bits:
// fc1's output u is recomputed in backward by the forward's own product (the same call, so the
// same bits), then the tail's backward runs as GeluDropoutLinearFn's and fc1's as the linear op's
// of the same path (the fused path: float32 parameter gradients, bias sums by the column kernel).
struct MlpRecomputeFn : torch::autograd::Function<MlpRecomputeFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor w1,
                               torch::Tensor b1, torch::Tensor w2, torch::Tensor b2, torch::Tensor bits, double p,
                               bool fused_path) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto dt = x.scalar_type();
    const auto w1c = w1.to(dt), b1c = b1.to(dt);
    auto [y, kernel] = gelu_dropout_linear_forward(at::linear(x, w1c, b1c), w2, b2, bits, p, fused_path);
    ctx->save_for_backward({x, w1c, b1c, w2, b2, bits});
    ctx->saved_data["p"] = p;
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["fused"] = fused_path;
    ctx->saved_data["w1_dtype"] = static_cast<int64_t>(w1.scalar_type());
    ctx->saved_data["b1_dtype"] = static_cast<int64_t>(b1.scalar_type());
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    auto s = ctx->get_saved_variables();
    const auto &x = s[0], &w1c = s[1], &b1c = s[2];
    const auto path = ctx->saved_data["fused"].toBool() ? OpPath::fused : OpPath::plain;
    const auto u = at::linear(x, w1c, b1c);  // the forward's product again
    auto [gu, gw2, gb2] = gelu_dropout_linear_grads(grads[0], u, s[3], s[4], s[5], ctx->saved_data["p"].toDouble(),
                                                    ctx->saved_data["kernel"].toBool(), path);
    const int64_t H = x.size(-1);
    const auto g = gu.reshape({-1, u.size(-1)}), x2 = x.reshape({-1, H});
    auto gw1 = weight_gradient(g, x2, static_cast<at::ScalarType>(ctx->saved_data["w1_dtype"].toInt()), path);
    auto gb1 = bias_gradient(g, path).to(static_cast<at::ScalarType>(ctx->saved_data["b1_dtype"].toInt()));
    auto gx = g.mm(w1c).view(x.sizes());
    return {gx, gw1, gb1, gw2, gb2, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// ---------------------------------------------------------------- the MLP's and adaLN's products in fp8

// fc2's input a = GELU(u)·mask in e4m3 (the forward product reads the rows, fc2's weight gradient
// the transposed layout), a by the GELU + dropout kernel where the fused path takes it.
// {a in fp8, whether the kernel ran}.
std::pair<Fp8Tensor, bool> fp8_gelu_operand(const torch::Tensor& u, const torch::Tensor& bits, double p,
                                            bool fused_path, Fp8Layout layout, const Fp8Slot& slot) {
  const auto given = bits.numel() ? bits : torch::Tensor();
  const auto ka = fused_path ? fused::gelu_dropout_forward(u, given, p) : std::nullopt;
  const auto a = ka ? *ka : gelu_dropped(u, given, p);
  return {to_fp8(a.reshape({-1, u.size(-1)}), torch::kFloat8_e4m3fn, layout, fused_path ? OpPath::fused : OpPath::plain,
                 slot),
          ka.has_value()};
}

// y = a·Wᵀ + b for a [M, K] in fp8 (a's rows): the output [.., N] in `sizes`' leading dims.
torch::Tensor fp8_product(const Fp8Tensor& a, const Fp8Tensor& w, const torch::Tensor& b, at::ScalarType dt,
                          at::IntArrayRef lead) {
  auto sizes = lead.vec();
  sizes.back() = w.data.size(0);
  return fp8_forward(a, w, b, dt).view(sizes);
}

// The MLP tail's gradients with fc2 in fp8, from the output's g: {u's (u's shape), W's (w_dtype),
// b's (b_dtype)}; aq and wq hold their transposed layouts.
std::array<torch::Tensor, 3> fp8_tail_grads(const torch::Tensor& g_out, const torch::Tensor& u, const Fp8Tensor& aq,
                                            const Fp8Tensor& wq, at::ScalarType w_dtype, at::ScalarType b_dtype,
                                            const torch::Tensor& bits_or_empty, double p, bool gelu_kernel,
                                            OpPath path, const Fp8Slot& g_slot) {
  const auto g = g_out.to(u.scalar_type()).reshape({aq.rows, wq.data_t.size(1)}).contiguous();
  const auto d = fp8_grads(g, aq, wq, u.scalar_type(), path, g_slot);
  return {gelu_dropout_input_grad(d.input, u, bits_or_empty, p, gelu_kernel), d.weight.to(w_dtype),
          d.bias.to(b_dtype)};
}

// An Fp8Tensor's transposed layout and scale as saved tensors, and back.
void save_transposed(std::vector<torch::Tensor>& saved, const Fp8Tensor& q) {
  saved.push_back(q.data_t);
  saved.push_back(q.scale_inv);
}
Fp8Tensor transposed_at(const torch::autograd::variable_list& s, size_t i, int64_t rows) {
  return {{}, s[i], s[i + 1], rows};
}

// GeluDropoutLinearFn with fc2 in fp8: keeps u, the mask, aᵀ and Wᵀ in fp8 (a is not recomputed
// in backward: the weight gradient reads the forward's rounded copy). Its scaling's rows are a
// linear's (kFp8Linear...: a, W, the output's gradient).
struct Fp8GeluDropoutLinearFn : torch::autograd::Function<Fp8GeluDropoutLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor u, torch::Tensor w,
                               torch::Tensor b, torch::Tensor bits, double p, bool fused_path, Fp8Scaling sc) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto path = fused_path ? OpPath::fused : OpPath::plain;
    const auto wq = to_fp8(w, torch::kFloat8_e4m3fn, Fp8Layout::both, path, sc.slot(kFp8LinearWeight));
    const auto [aq, kernel] = fp8_gelu_operand(u, bits, p, fused_path, Fp8Layout::both, sc.slot(kFp8LinearInput));
    auto y = fp8_product(aq, wq, b, u.scalar_type(), u.sizes());
    std::vector<torch::Tensor> saved{u, bits};
    save_transposed(saved, aq);
    save_transposed(saved, wq);
    ctx->save_for_backward(saved);
    ctx->saved_data["p"] = p;
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["fused"] = fused_path;
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(w.scalar_type());
    ctx->saved_data["b_dtype"] = static_cast<int64_t>(b.scalar_type());
    save_scaling(ctx, sc);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto s = ctx->get_saved_variables();
    const auto& u = s[0];
    const int64_t rows = u.numel() / u.size(-1);
    const auto aq = transposed_at(s, 2, rows), wq = transposed_at(s, 4, s[4].size(1));
    auto [gu, gw, gb] = fp8_tail_grads(grads[0], u, aq, wq, static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt()),
                                       static_cast<at::ScalarType>(ctx->saved_data["b_dtype"].toInt()), s[1],
                                       ctx->saved_data["p"].toDouble(), ctx->saved_data["kernel"].toBool(),
                                       ctx->saved_data["fused"].toBool() ? OpPath::fused : OpPath::plain,
                                       saved_scaling(ctx).slot(kFp8LinearGrad));
    return {gu, gw, gb, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// MlpRecomputeFn with fc1 and fc2 in fp8: keeps x in e4m3 (both layouts: fc1's forward again and
// its weight gradient), both weights in fp8 and the mask; u, a and a's fp8 copy are recomputed in
// backward by the forward's own calls (the same scales again: current scaling has no state, and a
// delayed one's scales change only between steps; the record sees the same magnitude twice), so
// the values and gradients are those of the fp8 ops kept apart, bit for bit. Scaling rows kFp8Mlp...
struct Fp8MlpRecomputeFn : torch::autograd::Function<Fp8MlpRecomputeFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor w1,
                               torch::Tensor b1, torch::Tensor w2, torch::Tensor b2, torch::Tensor bits, double p,
                               bool fused_path, Fp8Scaling sc) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto path = fused_path ? OpPath::fused : OpPath::plain;
    const auto dt = x.scalar_type();
    const int64_t H = x.size(-1);
    const auto fc1 = sc.rows(kFp8MlpFc1, kFp8LinearOperands), fc2 = sc.rows(kFp8MlpFc2, kFp8LinearOperands);
    const auto xq = to_fp8(x.reshape({-1, H}), torch::kFloat8_e4m3fn, Fp8Layout::both, path, fc1.slot(kFp8LinearInput));
    const auto w1q = to_fp8(w1, torch::kFloat8_e4m3fn, Fp8Layout::both, path, fc1.slot(kFp8LinearWeight));
    const auto w2q = to_fp8(w2, torch::kFloat8_e4m3fn, Fp8Layout::both, path, fc2.slot(kFp8LinearWeight));
    const auto b1c = b1.to(dt);
    const auto u = fp8_product(xq, w1q, b1c, dt, x.sizes());
    const auto [aq, kernel] = fp8_gelu_operand(u, bits, p, fused_path, Fp8Layout::both, fc2.slot(kFp8LinearInput));
    auto y = fp8_product(aq, w2q, b2, dt, x.sizes());
    ctx->save_for_backward({xq.data, xq.data_t, xq.scale_inv, w1q.data, w1q.data_t, w1q.scale_inv, w2q.data_t,
                            w2q.scale_inv, b1c, bits});
    ctx->saved_data["p"] = p;
    ctx->saved_data["fused"] = fused_path;
    ctx->saved_data["rows"] = xq.rows;
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    ctx->saved_data["w1_dtype"] = static_cast<int64_t>(w1.scalar_type());
    ctx->saved_data["b1_dtype"] = static_cast<int64_t>(b1.scalar_type());
    ctx->saved_data["w2_dtype"] = static_cast<int64_t>(w2.scalar_type());
    ctx->saved_data["b2_dtype"] = static_cast<int64_t>(b2.scalar_type());
    save_scaling(ctx, sc);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto s = ctx->get_saved_variables();
    const bool fused_path = ctx->saved_data["fused"].toBool();
    const auto path = fused_path ? OpPath::fused : OpPath::plain;
    const int64_t rows = ctx->saved_data["rows"].toInt();
    const Fp8Tensor xq{s[0], s[1], s[2], rows}, w1q{s[3], s[4], s[5], s[3].size(0)};
    const auto w2q = transposed_at(s, 6, s[6].size(1));
    const auto &b1c = s[8], &bits = s[9];
    const auto dt = b1c.scalar_type();
    const auto x_sizes = ctx->saved_data["x_sizes"].toIntVector();
    auto dtype = [&](const char* key) { return static_cast<at::ScalarType>(ctx->saved_data[key].toInt()); };
    const auto sc = saved_scaling(ctx);
    const auto fc1 = sc.rows(kFp8MlpFc1, kFp8LinearOperands), fc2 = sc.rows(kFp8MlpFc2, kFp8LinearOperands);
    // the forward's u and fc2's operand again (only the layout the weight gradient reads)
    const auto u = fp8_product(xq, w1q, b1c, dt, x_sizes);
    const auto [aq, kernel] = fp8_gelu_operand(u, bits, ctx->saved_data["p"].toDouble(), fused_path,
                                               Fp8Layout::transposed, fc2.slot(kFp8LinearInput));
    auto [gu, gw2, gb2] = fp8_tail_grads(grads[0], u, aq, w2q, dtype("w2_dtype"), dtype("b2_dtype"), bits,
                                         ctx->saved_data["p"].toDouble(), kernel, path, fc2.slot(kFp8LinearGrad));
    const auto d = fp8_grads(gu.reshape({rows, u.size(-1)}), xq, w1q, dt, path, fc1.slot(kFp8LinearGrad));
    return {d.input.view(x_sizes), d.weight.to(dtype("w1_dtype")), d.bias.to(dtype("b1_dtype")), gw2, gb2,
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// adaln_split6's two training products in fp8: x = SiLU(c) in e4m3 (its transposed layout kept for
// the weight gradients), the two row groups of W cast each, the output gradients in e5m2; the
// outputs in the matmul dtype (to_compute's), W's and b's gradients in float32 in W's row order, x's
// summed from the two products in float32 and returned in x's dtype (x is SiLU(c) as the generator
// computes it, float32: no cast of it to bf16 and back per block). Scaling rows kFp8Adaln...
struct Fp8AdalnSplitFn : torch::autograd::Function<Fp8AdalnSplitFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                                                torch::Tensor w, torch::Tensor b, bool fused_path,
                                                at::ScalarType compute_dtype, Fp8Scaling sc) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto path = fused_path ? OpPath::fused : OpPath::plain;
    const auto dt = compute_dtype;
    const auto xq =
        to_fp8(x.reshape({-1, x.size(-1)}), torch::kFloat8_e4m3fn, Fp8Layout::both, path, sc.slot(kFp8AdalnInput));
    const auto [ws, wk] = adaln_split_rows(w);
    const auto [bs, bk] = adaln_split_rows(b);
    const auto wsq = to_fp8(ws, torch::kFloat8_e4m3fn, Fp8Layout::both, path, sc.slot(kFp8AdalnShiftWeight));
    const auto wkq = to_fp8(wk, torch::kFloat8_e4m3fn, Fp8Layout::both, path, sc.slot(kFp8AdalnScaleWeight));
    std::vector<torch::Tensor> saved;
    for (const auto* q : {&xq, &wsq, &wkq}) save_transposed(saved, *q);
    ctx->save_for_backward(saved);
    ctx->saved_data["fused"] = fused_path;
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    ctx->saved_data["dtype"] = static_cast<int64_t>(dt);
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(w.scalar_type());
    ctx->saved_data["b_dtype"] = static_cast<int64_t>(b.scalar_type());
    save_scaling(ctx, sc);
    return {fp8_product(xq, wsq, bs, dt, x.sizes()), fp8_product(xq, wkq, bk, dt, x.sizes())};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto s = ctx->get_saved_variables();
    const auto path = ctx->saved_data["fused"].toBool() ? OpPath::fused : OpPath::plain;
    const auto x_sizes = ctx->saved_data["x_sizes"].toIntVector();
    const int64_t H = x_sizes.back(), rows = c10::multiply_integers(x_sizes) / H;
    const auto xq = transposed_at(s, 0, rows), wsq = transposed_at(s, 2, 2 * H), wkq = transposed_at(s, 4, 4 * H);
    const auto dt = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    torch::Tensor gw[2], gb[2], gx;
    const Fp8Tensor* wq[2] = {&wsq, &wkq};
    const auto sc = saved_scaling(ctx);
    const int64_t g_rows[2] = {kFp8AdalnShiftGrad, kFp8AdalnScaleGrad};
    for (int i = 0; i < 2; ++i) {
      const auto d = fp8_grads(grads[i].to(dt).reshape({rows, grads[i].size(-1)}).contiguous(), xq, *wq[i],
                               torch::kFloat32, path, sc.slot(g_rows[i]));
      gw[i] = d.weight;
      gb[i] = d.bias;
      gx = i == 0 ? d.input : gx + d.input;
    }
    return {gx.to(static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt())).view(x_sizes),
            adaln_join_rows(gw[0], gw[1]).to(static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt())),
            adaln_join_rows(gb[0], gb[1]).to(static_cast<at::ScalarType>(ctx->saved_data["b_dtype"].toInt())),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

// ---------------------------------------------------------------- the ops

torch::Tensor dropout_bits(int64_t n, double p, const torch::Device& device, OpPath path) {
  if (p <= 0 || n == 0) return {};
  if (path == OpPath::fused)
    if (auto b = fused::dropout_bits(n, p, device)) return *b;
  return pack_bits(torch::empty({n}, torch::TensorOptions(torch::kBool).device(device)).bernoulli_(1.0 - p));
}

torch::Tensor pack_bits(const torch::Tensor& mask) {
  auto m = mask.reshape({-1}).to(torch::kUInt8);
  const int64_t n = m.numel(), pad = (8 - n % 8) % 8;
  if (pad) m = torch::cat({m, torch::zeros({pad}, m.options())});
  const auto i32 = m.options().dtype(torch::kInt32);
  const auto weights = torch::ones({8}, i32).bitwise_left_shift(torch::arange(8, i32));  // 1, 2, 4, ..., 128
  return (m.view({-1, 8}).to(torch::kInt32) * weights).sum(1).to(torch::kUInt8);
}

torch::Tensor unpack_bits(const torch::Tensor& bits, at::IntArrayRef sizes) {
  const int64_t n = c10::multiply_integers(sizes);
  const auto shifts = torch::arange(8, bits.options());
  auto m = bits.unsqueeze(1).bitwise_right_shift(shifts).bitwise_and(1).to(torch::kBool).reshape({-1});
  return m.narrow(0, 0, n).view(sizes);
}

torch::Tensor linear(const torch::nn::LinearImpl& l, const torch::Tensor& x, OpPath path, const Fp8Mode& fp8) {
  if (fp8.on && l.bias.defined() && fp8_product_fits(x, l.weight))
    return fp8_linear(to_compute(x), l.weight, l.bias, path, fp8.scaling);
  if (path == OpPath::fused)
    if (auto y = fused::linear(l, x)) return *y;
  return at::linear(x, l.weight, l.bias);
}

torch::Tensor weight_gradient(const torch::Tensor& g, const torch::Tensor& a, at::ScalarType w_dtype, OpPath path) {
  if (path == OpPath::fused)
    if (auto w = fused::weight_gradient(g, a, w_dtype)) return *w;
  return g.t().mm(a).to(w_dtype);
}

torch::Tensor bias_gradient(const torch::Tensor& g, OpPath path) {
  if (path == OpPath::fused)
    if (auto b = fused::bias_gradient(g)) return *b;
  return g.reshape({-1, g.size(-1)}).sum(0, false, torch::kFloat32);
}

torch::Tensor ln_modulate(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& shift,
                          const torch::Tensor& scale, OpPath path) {
  if (path == OpPath::fused)
    if (auto y = fused::ln_modulate(ln, x, shift, scale)) return *y;
  return ln_modulate_plain(ln, x, shift, scale);
}

std::array<torch::Tensor, 2> ln_modulate_branch(const torch::nn::LayerNorm& ln, const torch::Tensor& x,
                                                const torch::Tensor& shift, const torch::Tensor& scale, OpPath path) {
  if (path == OpPath::fused)
    if (auto r = fused::ln_modulate_branch(ln, x, shift, scale)) return *r;
  return {x, ln_modulate(ln, x, shift, scale, path)};
}

torch::Tensor gated_residual_masked(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y,
                                    const torch::Tensor& bits, double p, OpPath path) {
  if (path == OpPath::fused)
    if (auto r = fused::gated_residual(x, gate, y, bits, p)) return *r;
  // dropout as LibTorch's: the branch · mask · 1/(1-p) in its own dtype, then the residual add
  return torch::addcmul(x, gate, bits.defined() ? y * unpack_bits(bits, y.sizes()) * (1.0 / (1.0 - p)) : y);
}

torch::Tensor gated_residual(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y, double p,
                             OpPath path) {
  return gated_residual_masked(x, gate, y, dropout_bits(p > 0 ? y.numel() : 0, p, y.device(), path), p, path);
}

std::array<torch::Tensor, 2> gated_residual_ln_modulate(const torch::Tensor& x, const torch::Tensor& gate,
                                                        const torch::Tensor& y, const torch::nn::LayerNorm& ln,
                                                        const torch::Tensor& shift, const torch::Tensor& scale,
                                                        bool inference, OpPath path) {
  if (path == OpPath::fused && inference && !torch::GradMode::is_enabled())
    if (auto r = fused::gated_residual_ln_modulate(x, gate, y, ln, shift, scale)) return *r;
  auto x2 = gated_residual(x, gate, y, 0.0, path);
  return {x2, ln_modulate(ln, x2, shift, scale, path)};
}

std::array<torch::Tensor, 3> qk_norm_split(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                           const torch::nn::LayerNorm& k_norm, OpPath path) {
  if (path == OpPath::fused)
    if (auto r = fused::qk_norm_split(qkv, heads, q_norm, k_norm)) return *r;
  return qk_norm_split_plain(qkv, heads, q_norm, k_norm);
}

torch::Tensor gelu_dropout_linear_plain(const torch::Tensor& u, const torch::Tensor& bits, double p,
                                        const torch::Tensor& w, const torch::Tensor& b) {
  return linear_in(gelu_dropped(u, bits, p), w, b);
}

torch::Tensor gelu_dropout_linear_saving(const torch::Tensor& u, const torch::Tensor& bits, double p,
                                         const torch::Tensor& w, const torch::Tensor& b, OpPath path,
                                         const Fp8Mode& fp8) {
  const auto m = bits.defined() ? bits : torch::empty({0}, u.options().dtype(torch::kUInt8));
  if (fp8.on && b.defined() && fp8_product_fits(u, w))
    return Fp8GeluDropoutLinearFn::apply(u, w, b, m, p, path == OpPath::fused, fp8.scaling);
  return GeluDropoutLinearFn::apply(u, w, b, m, p, path == OpPath::fused);
}

torch::Tensor gelu_dropout_linear(const torch::Tensor& u, const torch::nn::LinearImpl& fc2, double p, bool training,
                                  OpPath path, const Fp8Mode& fp8) {
  if (!training) return at::linear(at::gelu(u), fc2.weight, fc2.bias);
  // The mask is drawn the same way with or without gradients, so a recomputed block's
  // recomputation (gradients on) sees the mask its forward (gradients off) drew.
  const auto bits = dropout_bits(p > 0 ? u.numel() : 0, p, u.device(), path);
  // The same op (and kernels) with or without gradients, so that a recomputed block's recomputed
  // forward repeats its first forward exactly.
  return gelu_dropout_linear_saving(u, bits, p, fc2.weight, fc2.bias, path, fp8);
}

torch::Tensor mlp_recomputing_masked(const torch::Tensor& x, const torch::Tensor& bits, double p,
                                     const torch::nn::LinearImpl& fc1, const torch::nn::LinearImpl& fc2, OpPath path,
                                     const Fp8Mode& fp8) {
  const auto m = bits.defined() ? bits : torch::empty({0}, x.options().dtype(torch::kUInt8));
  if (fp8.on && fc1.bias.defined() && fc2.bias.defined() && fp8_product_fits(x, fc1.weight) &&
      fc2.weight.size(1) % 16 == 0 && fc2.weight.size(0) % 16 == 0)
    return Fp8MlpRecomputeFn::apply(to_compute(x), fc1.weight, fc1.bias, fc2.weight, fc2.bias, m, p,
                                    path == OpPath::fused, fp8.scaling);
  return MlpRecomputeFn::apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, m, p, path == OpPath::fused);
}

torch::Tensor mlp_recomputing(const torch::Tensor& x, const torch::nn::LinearImpl& fc1,
                              const torch::nn::LinearImpl& fc2, double p, OpPath path, const Fp8Mode& fp8) {
  // the mask drawn as gelu_dropout_linear draws it (fc1's product draws nothing): the same stream
  const int64_t n = x.numel() / x.size(-1) * fc1.weight.size(0);
  return mlp_recomputing_masked(x, dropout_bits(p > 0 ? n : 0, p, x.device(), path), p, fc1, fc2, path, fp8);
}

std::array<torch::Tensor, 6> adaln_split6(const torch::nn::LinearImpl& lin, const torch::Tensor& silu_c,
                                          bool training, OpPath path, const Fp8Mode& fp8) {
  if (!training) {
    auto m = at::linear(silu_c, lin.weight, lin.bias).chunk(6, -1);
    return {m[0], m[1], m[2], m[3], m[4], m[5]};
  }
  std::array<torch::Tensor, 2> products;  // {shifts [..,2H], the others [..,4H]}
  if (fp8.on && lin.bias.defined() && fp8_product_fits(silu_c, lin.weight)) {
    // SiLU(c) as it comes (float32 from the generator): cast to e4m3 from it, its gradient in its dtype
    const auto out = Fp8AdalnSplitFn::apply(silu_c, lin.weight, lin.bias, path == OpPath::fused,
                                            compute_dtype(silu_c), fp8.scaling);
    products = {out[0], out[1]};
  } else if (auto r = path == OpPath::fused ? fused::adaln_split(lin, silu_c) : std::nullopt) {
    products = *r;
  } else {
    // The weight in the matmul dtype first (autocast's cached cast of the parameter), so the row
    // gathers below move half the bytes and the matmuls need no cast of their own.
    const auto dev = silu_c.device().type();
    const bool ac = at::autocast::is_autocast_enabled(dev);
    const auto dt = ac ? at::autocast::get_autocast_dtype(dev) : lin.weight.scalar_type();
    const auto [ws, wk] = adaln_split_rows(ac ? at::autocast::cached_cast(dt, lin.weight, dev) : lin.weight);
    const auto [bs, bk] = adaln_split_rows(ac ? at::autocast::cached_cast(dt, lin.bias, dev) : lin.bias);
    products = {at::linear(silu_c, ws, bs), at::linear(silu_c, wk, bk)};
  }
  auto shifts = products[0].chunk(2, -1), kept = products[1].chunk(4, -1);
  return {shifts[0], kept[0], kept[1], shifts[1], kept[2], kept[3]};
}

torch::Tensor adaln_join_rows(const torch::Tensor& shifts, const torch::Tensor& others) {
  const int64_t H = shifts.size(0) / 2;
  return torch::cat({shifts.narrow(0, 0, H), others.narrow(0, 0, 2 * H), shifts.narrow(0, H, H),
                     others.narrow(0, 2 * H, 2 * H)});
}

std::array<torch::Tensor, 2> adaln_split_rows(const torch::Tensor& t) {
  const int64_t H = t.size(0) / 6;
  // rows of W (and b): shift_a [0,H), scale_a gate_a [H,3H), shift_m [3H,4H), scale_m gate_m [4H,6H)
  return {torch::cat({t.narrow(0, 0, H), t.narrow(0, 3 * H, H)}),
          torch::cat({t.narrow(0, H, 2 * H), t.narrow(0, 4 * H, 2 * H)})};
}

}  // namespace rar::model
