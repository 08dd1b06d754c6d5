// fused_ops.cpp — see fused_ops.h.
#include "model/fused_ops.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/autocast_mode.h>

#ifdef RAR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/block_kernels.h"
#include "kernels/decode_attention.h"
#include "kernels/group_norm.h"
#include "kernels/upsample.h"
#endif
#include "util/error.h"

namespace rar::model {

namespace {
bool env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e && std::string(e) == value;
}
// RAR_FUSED=0 in the environment starts with the plain path everywhere.
std::atomic<bool> g_fused{!env_is("RAR_FUSED", "0")};
// The warp variant of the decode-attention kernel is the default (faster at every fill and cache
// dtype measured, bench/RESULTS.md); RAR_DECODE_ATTENTION=block starts with the block variant.
std::atomic<bool> g_warp_attention{!env_is("RAR_DECODE_ATTENTION", "block")};

// ---------------------------------------------------------------- plain path (the reference)

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

#ifdef RAR_WITH_CUDA
// ---------------------------------------------------------------- fused path (CUDA kernels)

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
namespace K = rar::kernels;

K::DType kdt(const torch::Tensor& t) { return t.scalar_type() == torch::kBFloat16 ? K::DType::bf16 : K::DType::f32; }
bool kernel_dtype(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16;
}
cudaStream_t stream() { return at::cuda::getCurrentCUDAStream(); }

// A [B,N,H] view whose rows (b,n) all sit `stride(1)` elements apart with contiguous columns (a
// chunk of a contiguous [B,N,6H] projection is one).
bool uniform_rows(const torch::Tensor& t) {
  return t.dim() == 3 && t.stride(2) == 1 && (t.size(0) == 1 || t.stride(0) == t.size(1) * t.stride(1));
}
// LayerNorm affine parameters, or an empty tensor for none (autograd Functions take no undefined inputs).
float* opt_ptr(const torch::Tensor& t) { return t.defined() && t.numel() > 0 ? t.data_ptr<float>() : nullptr; }

struct LnModulateFn : torch::autograd::Function<LnModulateFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor w, torch::Tensor b,
                               torch::Tensor shift, torch::Tensor scale, double eps) {
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t H = x.size(-1), rows = x.numel() / H;
    auto y = torch::empty(x.sizes(), x.options().dtype(shift.scalar_type()));
    auto mean = torch::empty({rows}, x.options().dtype(torch::kFloat32));
    auto rstd = torch::empty_like(mean);
    K::ln_modulate_forward(kdt(x), kdt(shift), x.data_ptr(), rows, static_cast<int>(H), opt_ptr(w), opt_ptr(b),
                           shift.data_ptr(), shift.stride(1), scale.data_ptr(), scale.stride(1),
                           static_cast<float>(eps), y.data_ptr(), mean.data_ptr<float>(), rstd.data_ptr<float>(),
                           stream());
    ctx->save_for_backward({x, w, b, scale, mean, rstd});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &x = s[0], &w = s[1], &b = s[2], &scale = s[3], &mean = s[4], &rstd = s[5];
    c10::cuda::CUDAGuard guard(x.device());
    auto gy = grads[0].to(scale.scalar_type()).contiguous();
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
                            static_cast<int>(H), gx.data_ptr(), gscale.data_ptr(), opt_ptr(gw_part),
                            opt_ptr(gb_part), stream());
    torch::Tensor gw, gb;
    if (affine) {
      gw = gw_part.sum(0);
      gb = gb_part.sum(0);
    }
    return {gx, gw, gb, gy, gscale, torch::Tensor()};
  }
};

struct GatedResidualFn : torch::autograd::Function<GatedResidualFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor gate, torch::Tensor y) {
    ctx->save_for_backward({gate, y});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    return torch::addcmul(x, gate, y);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &gate = s[0], &y = s[1];
    c10::cuda::CUDAGuard guard(y.device());
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    auto g = grads[0].to(x_dtype).contiguous();
    const int64_t H = y.size(-1), rows = y.numel() / H;
    auto ggate = torch::empty(y.sizes(), y.options());
    auto gy = torch::empty_like(ggate);
    K::gated_residual_backward(kdt(g), kdt(y), g.data_ptr(), gate.data_ptr(), gate.stride(1), y.data_ptr(), rows,
                               static_cast<int>(H), ggate.data_ptr(), gy.data_ptr(), stream());
    return {g, ggate, gy};
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
    auto part = torch::empty({K::qk_norm_partial_rows(B * N * 3 * heads), 4, hd}, mean.options());
    K::qk_norm_split_backward(kdt(qkv), gq.data_ptr(), gk.data_ptr(), gv.data_ptr(), qkv.data_ptr(),
                              mean.data_ptr<float>(), rstd.data_ptr<float>(), wq.data_ptr<float>(),
                              wk.data_ptr<float>(), B, N, static_cast<int>(heads), static_cast<int>(hd),
                              gqkv.data_ptr(), part.data_ptr<float>(), stream());
    auto sums = part.sum(0);  // [4, hd]
    return {gqkv, sums[0], sums[1], sums[2], sums[3], torch::Tensor(), torch::Tensor()};
  }
};

// The dtype of the plain path's modulation result: the normalised value (autocast's dtype, else
// x's) promoted with shift and scale. The fused path writes shift's dtype, so it must be that.
at::ScalarType plain_modulate_dtype(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  const auto dev = x.device().type();
  const auto n = at::autocast::is_autocast_enabled(dev) ? at::autocast::get_autocast_dtype(dev) : x.scalar_type();
  return at::promote_types(at::promote_types(n, shift.scalar_type()), scale.scalar_type());
}

// The kernels take float32 affine parameters; a bf16 model's (bf16 inference) are cast, a few
// hundred values.
bool affine_ok(const torch::nn::LayerNorm& ln) {
  const auto& w = ln->weight;
  return (!w.defined() && !ln->bias.defined()) ||
         (w.defined() && ln->bias.defined() && kernel_dtype(w) && kernel_dtype(ln->bias));
}
// A bf16 model's affine parameters, cast once and kept: a decode step would otherwise launch
// four tiny cast kernels per block (a tenth of a rar_xl step's kernels). Keyed by the parameter's
// TensorImpl, of which each entry holds a weak reference (so the address cannot be reused while
// the entry lives); an entry is valid while the version counter and storage are unchanged.
// Trainable tensors are cast every time.
torch::Tensor f32(const torch::Tensor& t) {
  if (t.scalar_type() == torch::kFloat32 && t.is_contiguous()) return t;
  if (t.requires_grad() && torch::GradMode::is_enabled()) return t.to(torch::kFloat32).contiguous();
  struct Entry {
    c10::weak_intrusive_ptr<c10::TensorImpl> source;
    int64_t version;
    const void* data;
    torch::Tensor cast;
  };
  static std::mutex mu;
  static std::unordered_map<const c10::TensorImpl*, Entry> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(t.unsafeGetTensorImpl());
  if (it != cache.end() && it->second.version == t._version() && it->second.data == t.data_ptr())
    return it->second.cast;
  for (auto e = cache.begin(); e != cache.end();)  // entries of freed parameters go on an insert
    e = e->second.source.expired() ? cache.erase(e) : std::next(e);
  auto cast = t.detach().to(torch::kFloat32).contiguous();
  cache.insert_or_assign(t.unsafeGetTensorImpl(),
                         Entry{c10::weak_intrusive_ptr<c10::TensorImpl>(t.getIntrusivePtr()), t._version(),
                               t.data_ptr(), cast});
  return cast;
}

// What the LN-modulation kernels take (ln_modulate's fused path, and gated_residual_ln_modulate's).
bool ln_modulate_fusable(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& shift,
                         const torch::Tensor& scale) {
  return fused_kernels_enabled() && x.is_cuda() && x.dim() == 3 && x.size(-1) <= kernels::kMaxWidth &&
         kernel_dtype(x) && kernel_dtype(shift) && shift.scalar_type() == scale.scalar_type() &&
         plain_modulate_dtype(x, shift, scale) == shift.scalar_type() &&
         !(x.scalar_type() == torch::kBFloat16 && shift.scalar_type() == torch::kFloat32) &&
         shift.sizes() == x.sizes() && scale.sizes() == x.sizes() && uniform_rows(shift) && uniform_rows(scale) &&
         affine_ok(ln);
}
// What a decode step's cache-slot kernels take, dtypes aside (qk_norm_into_cache's fused path, and
// qk_norm_decode_attention's): no gradients, one position per row of qkv [B,1,3H] on the GPU, q/k
// norms with affine parameters, caches [B,heads,cap,hd] contiguous in one dtype, the slot [1] int64
// on the GPU.
bool cache_slot_fusable(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                        const torch::nn::LayerNorm& k_norm, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                        const torch::Tensor& slot) {
  const int64_t hd = qkv.size(-1) / 3 / heads;
  return fused_kernels_enabled() && !torch::GradMode::is_enabled() && qkv.is_cuda() && qkv.dim() == 3 &&
         qkv.size(1) == 1 && qkv.size(2) == 3 * heads * hd && affine_ok(q_norm) && affine_ok(k_norm) &&
         q_norm->weight.defined() && k_norm->weight.defined() && v_cache.scalar_type() == k_cache.scalar_type() &&
         k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.dim() == 4 && k_cache.size(0) == qkv.size(0) &&
         k_cache.size(1) == heads && k_cache.size(3) == hd && v_cache.sizes() == k_cache.sizes() && slot.is_cuda() &&
         slot.scalar_type() == torch::kInt64 && slot.numel() == 1;
}
float attention_scale(int64_t hd) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))); }
// What the gated-residual kernels take (gated_residual's fused path, and gated_residual_ln_modulate's).
bool gated_residual_fusable(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y) {
  return fused_kernels_enabled() && x.is_cuda() && x.dim() == 3 && kernel_dtype(x) && kernel_dtype(y) &&
         gate.scalar_type() == y.scalar_type() &&
         !(x.scalar_type() == torch::kBFloat16 && y.scalar_type() == torch::kFloat32) && gate.sizes() == x.sizes() &&
         y.sizes() == x.sizes() && uniform_rows(gate);
}
#endif

// ---------------------------------------------------------------- MLP tail (every device)

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

// CUDA: GELU + dropout as one kernel each way, the mask kept as bits (n/8 bytes). u contiguous,
// float32 or bf16, a multiple of 8 elements, 16-byte aligned.
#ifdef RAR_WITH_CUDA
bool gelu_kernel_ok(const torch::Tensor& u, const torch::Tensor& mask) {
  return fused_kernels_enabled() && u.is_cuda() && kernel_dtype(u) && u.is_contiguous() &&
         (mask.numel() == 0 || (mask.is_contiguous() && mask.scalar_type() == torch::kBool)) &&
         kernels::gelu_dropout_supported(kdt(u), u.data_ptr(), u.numel());
}
#endif

struct GeluDropoutLinearFn : torch::autograd::Function<GeluDropoutLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor u, torch::Tensor w,
                               torch::Tensor b, torch::Tensor mask, double p) {
    ctx->saved_data["p"] = p;
    const bool has_mask = mask.numel() > 0;
#ifdef RAR_WITH_CUDA
    if (gelu_kernel_ok(u, mask)) {
      c10::cuda::CUDAGuard guard(u.device());
      auto a = torch::empty_like(u);
      auto bits = torch::empty({has_mask ? u.numel() / 8 : 0}, u.options().dtype(torch::kUInt8));
      K::gelu_dropout_forward(kdt(u), u.data_ptr(), has_mask ? mask.data_ptr<bool>() : nullptr,
                              static_cast<float>(has_mask ? 1.0 / (1.0 - p) : 1.0), u.numel(), a.data_ptr(),
                              has_mask ? bits.data_ptr<uint8_t>() : nullptr, stream());
      ctx->save_for_backward({u, w, b, bits});
      ctx->saved_data["packed"] = true;
      return linear_in(a, w, b);
    }
#endif
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
#ifdef RAR_WITH_CUDA
      c10::cuda::CUDAGuard guard(u.device());
      const auto& bits = s[3];
      gu = g.mm(w.to(dt));  // the gradient of a, turned into u's in place
      a = torch::empty_like(gu);
      K::gelu_dropout_backward(kdt(u), u.data_ptr(), bits.numel() ? bits.data_ptr<uint8_t>() : nullptr,
                               static_cast<float>(bits.numel() ? 1.0 / (1.0 - p) : 1.0), u.numel(), gu.data_ptr(),
                               a.data_ptr(), stream());
      gu = gu.view(u.sizes());
#endif
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

torch::Tensor shared_cast(const torch::Tensor& src, const torch::Tensor& cast) {
  if (cast.scalar_type() == src.scalar_type()) return src;
  if (!torch::GradMode::is_enabled() || !src.requires_grad()) return cast;
  return SharedCastFn::apply(src, cast.detach());
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
  // The mask is drawn the same way with or without gradients, so a checkpointed block's
  // recomputation (gradients on) sees the mask its forward (gradients off) drew.
  torch::Tensor mask;
  if (p > 0) mask = torch::empty(u.sizes(), u.options().dtype(torch::kBool)).bernoulli_(1.0 - p);
  // The same op (and kernels) with or without gradients, so that a checkpointed block's recomputed
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

torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                               const torch::Tensor& last, const torch::Tensor& valid) {
  const int64_t B = q.size(0), heads = q.size(1), hd = q.size(3);
#ifdef RAR_WITH_CUDA
  const int64_t cap = k_cache.size(2);
  const bool fp8 = k_cache.scalar_type() == torch::kFloat8_e4m3fn && q.scalar_type() == torch::kBFloat16;
  if (fused_kernels_enabled() && q.is_cuda() && kernel_dtype(q) && q.size(2) == 1 &&
      (k_cache.scalar_type() == q.scalar_type() || fp8) && v_cache.scalar_type() == k_cache.scalar_type() &&
      k_cache.is_contiguous() && v_cache.is_contiguous() && last.is_cuda() && last.scalar_type() == torch::kInt64 &&
      kernels::decode_attention_supported(static_cast<int>(hd), cap)) {
    c10::cuda::CUDAGuard guard(q.device());
    auto qc = q.reshape({B, heads, hd}).contiguous();
    auto out = torch::empty({B, 1, heads * hd}, q.options());
    const bool warp = g_warp_attention.load() &&
                      kernels::decode_attention_warp_supported(static_cast<int>(hd), cap, q.scalar_type() == torch::kBFloat16);
    kernels::decode_attention(kdt(q), qc.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), last.data_ptr<int64_t>(),
                              B, static_cast<int>(heads), static_cast<int>(hd), cap,
                              attention_scale(hd), out.data_ptr(), stream(),
                              fp8, warp ? kernels::DecodeAttentionVariant::warp : kernels::DecodeAttentionVariant::block);
    return out;
  }
#endif
  // (a cache in another dtype, fp8, is read in q's)
  return at::scaled_dot_product_attention(q, k_cache.to(q.scalar_type()), v_cache.to(q.scalar_type()), valid)
      .transpose(1, 2)
      .reshape({B, 1, heads * hd});
}

torch::Tensor qk_norm_decode_attention(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                       const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache,
                                       torch::Tensor& v_cache, const torch::Tensor& slot, const torch::Tensor& valid) {
#ifdef RAR_WITH_CUDA
  const int64_t B = qkv.size(0), H = qkv.size(-1) / 3, hd = H / heads;
  const auto ct = k_cache.scalar_type();
  if (g_warp_attention.load() && cache_slot_fusable(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot) &&
      qkv.scalar_type() == torch::kBFloat16 && (ct == torch::kBFloat16 || ct == torch::kFloat8_e4m3fn) &&
      kernels::decode_attention_warp_supported(static_cast<int>(hd), k_cache.size(2), /*bf16_queries=*/true)) {
    c10::cuda::CUDAGuard guard(qkv.device());
    const auto in = qkv.contiguous();
    auto out = torch::empty({B, 1, H}, qkv.options());
    kernels::qk_norm_decode_attention(in.data_ptr(), B, static_cast<int>(heads), static_cast<int>(hd),
                                      f32(q_norm->weight).data_ptr<float>(), f32(q_norm->bias).data_ptr<float>(),
                                      f32(k_norm->weight).data_ptr<float>(), f32(k_norm->bias).data_ptr<float>(),
                                      static_cast<float>(q_norm->options.eps()), k_cache.data_ptr(),
                                      v_cache.data_ptr(), slot.data_ptr<int64_t>(), k_cache.size(2),
                                      attention_scale(hd), out.data_ptr(), stream(), ct == torch::kFloat8_e4m3fn);
    return out;
  }
#endif
  auto q = qk_norm_into_cache(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot);
  return decode_attention(q, k_cache, v_cache, slot, valid);
}

torch::Tensor to_compute(const torch::Tensor& t) {
  const auto dev = t.device().type();
  if (at::autocast::is_autocast_enabled(dev)) return t.to(at::autocast::get_autocast_dtype(dev));
  return t;
}

void set_decode_attention_kernel(const std::string& name) {
  check(name == "block" || name == "warp", "decode attention kernel: expected block or warp, got '", name, "'");
  g_warp_attention.store(name == "warp");
}
std::string decode_attention_kernel() { return g_warp_attention.load() ? "warp" : "block"; }

bool fused_kernels_enabled() { return g_fused.load(); }
void set_fused_kernels(bool on) { g_fused.store(on); }
bool fused_kernels_built() {
#ifdef RAR_WITH_CUDA
  return true;
#else
  return false;
#endif
}

torch::Tensor ln_modulate(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& shift,
                          const torch::Tensor& scale) {
#ifdef RAR_WITH_CUDA
  if (ln_modulate_fusable(ln, x, shift, scale)) {
    const auto none = torch::empty({0}, x.options().dtype(torch::kFloat32));
    return LnModulateFn::apply(x.contiguous(), ln->weight.defined() ? f32(ln->weight) : none,
                               ln->bias.defined() ? f32(ln->bias) : none, shift, scale, ln->options.eps());
  }
#endif
  return ln_modulate_plain(ln, x, shift, scale);
}

torch::Tensor gated_residual(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y) {
#ifdef RAR_WITH_CUDA
  if (gated_residual_fusable(x, gate, y)) {
    return GatedResidualFn::apply(x, gate, y.contiguous());
  }
#endif
  return torch::addcmul(x, gate, y);
}

std::array<torch::Tensor, 2> gated_residual_ln_modulate(const torch::Tensor& x, const torch::Tensor& gate,
                                                        const torch::Tensor& y, const torch::nn::LayerNorm& ln,
                                                        const torch::Tensor& shift, const torch::Tensor& scale,
                                                        bool inference) {
#ifdef RAR_WITH_CUDA
  const auto t = gate.scalar_type();
  if (inference && !torch::GradMode::is_enabled() && x.is_contiguous() && shift.scalar_type() == t &&
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
      return {x_out, z};
    }
  }
#endif
  auto x2 = gated_residual(x, gate, y);
  return {x2, ln_modulate(ln, x2, shift, scale)};
}

torch::Tensor group_norm_silu(const torch::nn::GroupNorm& gn, const torch::Tensor& x, bool silu) {
  const auto& o = gn->options;
#ifdef RAR_WITH_CUDA
  if (fused_kernels_enabled() && !torch::GradMode::is_enabled() && x.is_cuda() && x.dim() == 4 &&
      kernel_dtype(x) && x.is_contiguous(at::MemoryFormat::ChannelsLast) && o.affine() && gn->weight.defined() &&
      kernel_dtype(gn->weight) && kernel_dtype(gn->bias) && x.size(1) == o.num_channels() &&
      reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 && kernels::group_norm_nhwc_supported(x.size(1), o.num_groups())) {
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
    auto y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    auto ws = torch::empty({kernels::group_norm_nhwc_workspace(N, HW, C, o.num_groups())},
                           x.options().dtype(torch::kFloat64));
    kernels::group_norm_nhwc(kdt(x), x.data_ptr(), N, HW, C, o.num_groups(), f32(gn->weight).data_ptr<float>(),
                             f32(gn->bias).data_ptr<float>(), static_cast<float>(o.eps()), silu, y.data_ptr(),
                             ws.data_ptr<double>(), stream());
    return y;
  }
#endif
  auto y = at::group_norm(x, o.num_groups(), gn->weight, gn->bias, o.eps());  // as GroupNormImpl::forward
  return silu ? torch::silu(y) : y;
}

torch::Tensor upsample_nearest2x(const torch::Tensor& x) {
#ifdef RAR_WITH_CUDA
  if (fused_kernels_enabled() && !torch::GradMode::is_enabled() && x.is_cuda() && x.dim() == 4 && kernel_dtype(x)) {
    const bool nchw = x.is_contiguous(), nhwc = !nchw && x.is_contiguous(at::MemoryFormat::ChannelsLast);
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    if (nchw || nhwc) {
      auto y = torch::empty({N, C, 2 * H, 2 * W}, x.options(),
                            nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
      if (kernels::upsample_nearest2x_supported(N, C, H, W, nhwc, x.data_ptr(), y.data_ptr())) {
        c10::cuda::CUDAGuard guard(x.device());
        kernels::upsample_nearest2x(kdt(x), x.data_ptr(), N, C, H, W, nhwc, y.data_ptr(), stream());
        return y;
      }
    }
  }
#endif
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
}

torch::Tensor to_cache_dtype(const torch::Tensor& x, at::ScalarType t) {
  if (x.scalar_type() == t) return x;
  // fp8 saturates like the CUDA kernels (LibTorch's cast would give NaN past 448)
  if (t == torch::kFloat8_e4m3fn) return x.to(torch::kFloat32).clamp(-448.0, 448.0).to(t);
  return x.to(t);
}

void append_to_cache(torch::Tensor& cache, const torch::Tensor& slot, const torch::Tensor& x) {
  auto c = to_cache_dtype(x, cache.scalar_type());
  if (cache.scalar_type() == torch::kFloat8_e4m3fn)  // index_copy_ has no fp8 kernels: copy the bytes
    cache.view(torch::kUInt8).index_copy_(2, slot, c.view(torch::kUInt8));
  else
    cache.index_copy_(2, slot, c);
}

torch::Tensor qk_norm_into_cache(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                 const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache, torch::Tensor& v_cache,
                                 const torch::Tensor& slot) {
#ifdef RAR_WITH_CUDA
  const int64_t B = qkv.size(0), hd = qkv.size(-1) / 3 / heads;
  const bool fp8 = k_cache.scalar_type() == torch::kFloat8_e4m3fn;
  if (cache_slot_fusable(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot) && kernel_dtype(qkv) &&
      hd <= kernels::kMaxWidth &&
      (k_cache.scalar_type() == qkv.scalar_type() ||
       (fp8 && kernels::qk_norm_fp8_cache_supported(kdt(qkv), static_cast<int>(hd)) &&
        qkv.scalar_type() == torch::kBFloat16))) {
    c10::cuda::CUDAGuard guard(qkv.device());
    const auto in = qkv.contiguous();
    auto q = torch::empty({B, 1, heads, hd}, qkv.options());
    K::qk_norm_split_forward(kdt(in), in.data_ptr(), B, 1, static_cast<int>(heads), static_cast<int>(hd),
                             f32(q_norm->weight).data_ptr<float>(), f32(q_norm->bias).data_ptr<float>(),
                             f32(k_norm->weight).data_ptr<float>(), f32(k_norm->bias).data_ptr<float>(),
                             static_cast<float>(q_norm->options.eps()), q.data_ptr(), k_cache.data_ptr(),
                             v_cache.data_ptr(), nullptr, nullptr, stream(), k_cache.size(2), slot.data_ptr<int64_t>(),
                             fp8);
    return q.transpose(1, 2);
  }
#endif
  auto [q, k, v] = qk_norm_split(qkv, heads, q_norm, k_norm);
  append_to_cache(k_cache, slot, k);
  append_to_cache(v_cache, slot, v);
  return q;
}

std::array<torch::Tensor, 3> qk_norm_split(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                           const torch::nn::LayerNorm& k_norm) {
#ifdef RAR_WITH_CUDA
  const int64_t hd = qkv.size(-1) / 3 / heads;
  if (fused_kernels_enabled() && qkv.is_cuda() && qkv.dim() == 3 && kernel_dtype(qkv) && hd <= kernels::kMaxWidth &&
      affine_ok(q_norm) && affine_ok(k_norm) && q_norm->weight.defined() && k_norm->weight.defined()) {
    auto out = QkNormSplitFn::apply(qkv.contiguous(), f32(q_norm->weight), f32(q_norm->bias), f32(k_norm->weight),
                                    f32(k_norm->bias), heads, q_norm->options.eps());
    // [B,N,heads,hd] -> [B,heads,N,hd] views (the layout attention kernels prefer)
    return {out[0].transpose(1, 2), out[1].transpose(1, 2), out[2].transpose(1, 2)};
  }
#endif
  return qk_norm_split_plain(qkv, heads, q_norm, k_norm);
}

}  // namespace rar::model
