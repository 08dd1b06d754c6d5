// fp8.cpp — see fp8.h. The casts' plain path here, their fused path in model/ops/cuda/fp8_cuda.cpp.
#include "model/ops/fp8.h"

#include <ATen/autocast_mode.h>

#include "model/ops/block_ops.h"
#include "model/ops/fused_paths.h"
#include "util/error.h"

namespace rar::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

double largest(at::ScalarType format) { return format == torch::kFloat8_e5m2 ? 57344.0 : 448.0; }

// The reference: float32 LibTorch ops, one rounding each, as the kernels compute.
Fp8Tensor to_fp8_plain(const torch::Tensor& t, at::ScalarType format, Fp8Layout layout, const Fp8Slot& slot) {
  const int64_t rows = t.size(0), pad = fp8_rows_padded(rows) - rows;
  const auto t32 = t.to(torch::kFloat32);
  torch::Tensor own;  // max |t|, where it is needed
  if (!slot.scale_by.defined() || slot.record.defined()) own = t32.abs().amax();
  // (scale_by is read before the record changes: they are different elements of the history)
  const auto amax = (slot.scale_by.defined() ? slot.scale_by.to(torch::kFloat32) : own).clamp_min(1e-30);  // all zeros: a finite scale
  if (slot.record.defined()) slot.record.copy_(at::maximum(slot.record, own));
  const auto top = torch::full({}, largest(format), amax.options());
  auto scaled = (t32 * top.div(amax)).clamp(-largest(format), largest(format));
  if (pad) scaled = torch::cat({scaled, torch::zeros({pad, t.size(1)}, scaled.options())});
  const auto q = scaled.to(format);
  Fp8Tensor r;
  if (layout != Fp8Layout::transposed) r.data = q;
  if (layout != Fp8Layout::rows) r.data_t = q.t().contiguous();
  r.scale_inv = amax.div(top);
  r.rows = rows;
  return r;
}

std::optional<torch::Tensor> opt(const torch::Tensor& t) { return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt; }

struct Fp8LinearFn : torch::autograd::Function<Fp8LinearFn> {
  // sc: not a tensor argument, so autograd neither tracks the slots nor checks their version (the
  // casts change them in place); backward finds it in saved_data (save_scaling)
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor w, torch::Tensor b,
                               bool fused_path, Fp8Scaling sc) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto path = fused_path ? OpPath::fused : OpPath::plain;
    const int64_t K = x.size(-1), N = w.size(0), M = x.numel() / K;
    const auto dt = x.scalar_type();
    const auto xq = to_fp8(x.reshape({M, K}), torch::kFloat8_e4m3fn, Fp8Layout::both, path, sc.slot(kFp8LinearInput));
    const auto wq = to_fp8(w, torch::kFloat8_e4m3fn, Fp8Layout::both, path, sc.slot(kFp8LinearWeight));
    auto y = fp8_forward(xq, wq, b, dt);
    ctx->save_for_backward({xq.data_t, xq.scale_inv, wq.data_t, wq.scale_inv});
    ctx->saved_data["rows"] = M;
    ctx->saved_data["dtype"] = static_cast<int64_t>(dt);
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(w.scalar_type());
    ctx->saved_data["b_dtype"] = static_cast<int64_t>(b.scalar_type());
    ctx->saved_data["fused"] = fused_path;
    save_scaling(ctx, sc);
    auto sizes = x.sizes().vec();
    sizes.back() = N;
    return y.view(sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto s = ctx->get_saved_variables();
    const int64_t M = ctx->saved_data["rows"].toInt();
    const Fp8Tensor xq{{}, s[0], s[1], M}, wq{{}, s[2], s[3], s[2].size(1)};
    const int64_t K = wq.data_t.size(0), N = wq.data_t.size(1);
    const auto dt = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    const auto path = ctx->saved_data["fused"].toBool() ? OpPath::fused : OpPath::plain;
    const auto d = fp8_grads(grads[0].to(dt).reshape({M, N}).contiguous(), xq, wq, dt, path,
                             saved_scaling(ctx).slot(kFp8LinearGrad));
    auto sizes = grads[0].sizes().vec();
    sizes.back() = K;
    return {d.input.view(sizes), d.weight.to(static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt())),
            d.bias.to(static_cast<at::ScalarType>(ctx->saved_data["b_dtype"].toInt())), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

void save_scaling(torch::autograd::AutogradContext* ctx, const Fp8Scaling& s) {
  if (s.slots.defined()) ctx->saved_data["fp8_slots"] = s.slots;
  ctx->saved_data["fp8_delayed"] = s.delayed;
}
Fp8Scaling saved_scaling(torch::autograd::AutogradContext* ctx) {
  Fp8Scaling s;
  if (ctx->saved_data.count("fp8_slots")) s.slots = ctx->saved_data["fp8_slots"].toTensor();
  s.delayed = ctx->saved_data["fp8_delayed"].toBool();
  return s;
}

Fp8Slot Fp8Scaling::slot(int64_t i) const {
  if (!slots.defined()) return {};
  const auto row = slots[i];
  return {delayed ? row[0] : torch::Tensor(), row[1]};
}

Fp8Scaling Fp8Scaling::rows(int64_t first, int64_t n) const {
  return {slots.defined() ? slots.narrow(0, first, n) : slots, delayed};
}

int64_t fp8_rows_padded(int64_t rows) { return (rows + 15) / 16 * 16; }

Fp8Tensor to_fp8(const torch::Tensor& t, at::ScalarType format, Fp8Layout layout, OpPath path, const Fp8Slot& slot) {
  TORCH_CHECK(t.dim() == 2 && t.size(1) % 16 == 0, "to_fp8: expected [rows, cols] with cols a multiple of 16, got ",
              t.sizes());
  if (path == OpPath::fused)
    if (auto q = fused::fp8_quantize(t, format, layout, slot)) return *q;
  return to_fp8_plain(t, format, layout, slot);
}

torch::Tensor fp8_forward(const Fp8Tensor& a, const Fp8Tensor& w, const torch::Tensor& bias, at::ScalarType out) {
  // The bias rides in the product's epilogue where the output is bf16 (the fp8 kernels take a bias
  // only then); otherwise it is added after.
  const auto b = bias.defined() ? bias.to(out) : bias;
  const bool epilogue = b.defined() && out == torch::kBFloat16;
  auto y = at::_scaled_mm(a.data, w.data.t(), a.scale_inv, w.scale_inv, epilogue ? opt(b) : std::nullopt,
                          std::nullopt, out, /*use_fast_accum=*/true);
  if (b.defined() && !epilogue) y.add_(b);
  return y.narrow(0, 0, a.rows);
}

Fp8Grads fp8_grads(const torch::Tensor& g, const Fp8Tensor& a, const Fp8Tensor& w, at::ScalarType input_dtype,
                   OpPath path, const Fp8Slot& g_slot) {
  // The bias gradient (g's column sums) comes out of the fused cast's pass over g, which reads g anyway.
  torch::Tensor bias;
  auto fused_cast = path == OpPath::fused ? fused::fp8_quantize(g, torch::kFloat8_e5m2, Fp8Layout::both, g_slot, &bias)
                                          : std::nullopt;
  const auto gq = fused_cast ? *fused_cast : to_fp8(g, torch::kFloat8_e5m2, Fp8Layout::both, path, g_slot);
  if (!fused_cast) bias = bias_gradient(g, path);
  // g·W: W [N, K] as the column-major right operand is Wᵀ stored row-major (data_t)
  auto input = at::_scaled_mm(gq.data, w.data_t.t(), gq.scale_inv, w.scale_inv, std::nullopt, std::nullopt,
                              input_dtype, false);
  auto weight = at::_scaled_mm(gq.data_t, a.data_t.t(), gq.scale_inv, a.scale_inv, std::nullopt, std::nullopt,
                               torch::kFloat32, false);
  return {input.narrow(0, 0, gq.rows), weight, bias};
}

bool fp8_product_fits(const torch::Tensor& x, const torch::Tensor& w) {
  return x.dim() >= 2 && w.dim() == 2 && x.size(-1) == w.size(1) && x.size(-1) % 16 == 0 && w.size(0) % 16 == 0 &&
         x.numel() > 0 && (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kFloat32);
}

std::string fp8_device_problem(const torch::Device& device, const gpu::DeviceKind& kind, const std::string& what) {
  if (!device.is_cuda() || kind.major * 10 + kind.minor >= 89) return "";
  return cat(what, ": the fp8 products need a GPU of compute capability 8.9 or above (Ada, Hopper or later); ",
             device.str(), " (", kind.name, ") is ", kind.major, ".", kind.minor, ": leave it off on this GPU");
}

void check_fp8_device(const torch::Device& device, const std::string& what) {
  const auto problem = fp8_device_problem(device, gpu::device_kind(device), what);
  check(problem.empty(), problem);
}

torch::Tensor fp8_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, OpPath path,
                         const Fp8Scaling& scaling) {
  return Fp8LinearFn::apply(x, w, b, path == OpPath::fused, scaling);
}

}  // namespace rar::model
