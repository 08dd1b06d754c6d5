// decode_ops_cuda.cpp — the fused path of model/ops/decode_ops (CUDA builds only): the cache-slot
// write and the decode-attention kernels (kernels/qk_norm.cu, kernels/decode_attention.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/decode_attention.h"
#include "model/ops/cuda/common.h"
#include "model/ops/decode_ops.h"
#include "model/ops/fused.h"
#include "model/ops/fused_paths.h"

namespace rar::model::fused {

namespace {
// What a decode step's cache-slot kernels take, dtypes aside (qk_norm_into_cache's fused path, and
// qk_norm_decode_attention's): no gradients, one position per row of qkv [B,1,3H] on the GPU, q/k
// norms with affine parameters, caches [B,heads,cap,hd] contiguous in one dtype, the slot [1] int64
// on the GPU.
bool cache_slot_fusable(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                        const torch::nn::LayerNorm& k_norm, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                        const torch::Tensor& slot) {
  const int64_t hd = qkv.size(-1) / 3 / heads;
  return !torch::GradMode::is_enabled() && qkv.is_cuda() && qkv.dim() == 3 &&
         qkv.size(1) == 1 && qkv.size(2) == 3 * heads * hd && affine_ok(q_norm) && affine_ok(k_norm) &&
         q_norm->weight.defined() && k_norm->weight.defined() && v_cache.scalar_type() == k_cache.scalar_type() &&
         k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.dim() == 4 && k_cache.size(0) == qkv.size(0) &&
         k_cache.size(1) == heads && k_cache.size(3) == hd && v_cache.sizes() == k_cache.sizes() && slot.is_cuda() &&
         slot.scalar_type() == torch::kInt64 && slot.numel() == 1;
}
}  // namespace

std::optional<torch::Tensor> qk_norm_into_cache(const torch::Tensor& qkv, int64_t heads,
                                                const torch::nn::LayerNorm& q_norm, const torch::nn::LayerNorm& k_norm,
                                                torch::Tensor& k_cache, torch::Tensor& v_cache,
                                                const torch::Tensor& slot) {
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
  return std::nullopt;
}

std::optional<torch::Tensor> decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache,
                                              const torch::Tensor& v_cache, const torch::Tensor& last, bool warp_kernel) {
  const int64_t B = q.size(0), heads = q.size(1), hd = q.size(3);
  const int64_t cap = k_cache.size(2);
  const bool fp8 = k_cache.scalar_type() == torch::kFloat8_e4m3fn && q.scalar_type() == torch::kBFloat16;
  if (q.is_cuda() && kernel_dtype(q) && q.size(2) == 1 &&
      (k_cache.scalar_type() == q.scalar_type() || fp8) && v_cache.scalar_type() == k_cache.scalar_type() &&
      k_cache.is_contiguous() && v_cache.is_contiguous() && last.is_cuda() && last.scalar_type() == torch::kInt64 &&
      kernels::decode_attention_supported(static_cast<int>(hd), cap)) {
    c10::cuda::CUDAGuard guard(q.device());
    auto qc = q.reshape({B, heads, hd}).contiguous();
    auto out = torch::empty({B, 1, heads * hd}, q.options());
    const bool warp = warp_kernel &&
                      kernels::decode_attention_warp_supported(static_cast<int>(hd), cap, q.scalar_type() == torch::kBFloat16);
    kernels::decode_attention(kdt(q), qc.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), last.data_ptr<int64_t>(),
                              B, static_cast<int>(heads), static_cast<int>(hd), cap,
                              attention_scale(hd), out.data_ptr(), stream(),
                              fp8, warp ? kernels::DecodeAttentionVariant::warp : kernels::DecodeAttentionVariant::block);
    return out;
  }
  return std::nullopt;
}

std::optional<torch::Tensor> qk_norm_decode_attention(const torch::Tensor& qkv, int64_t heads,
                                                      const torch::nn::LayerNorm& q_norm,
                                                      const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache,
                                                      torch::Tensor& v_cache, const torch::Tensor& slot, bool warp,
                                                      bool split) {
  const int64_t B = qkv.size(0), H = qkv.size(-1) / 3, hd = H / heads;
  const auto ct = k_cache.scalar_type();
  if (warp && cache_slot_fusable(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot) &&
      qkv.scalar_type() == torch::kBFloat16 && (ct == torch::kBFloat16 || ct == torch::kFloat8_e4m3fn) &&
      kernels::decode_attention_warp_supported(static_cast<int>(hd), k_cache.size(2), /*bf16_queries=*/true)) {
    c10::cuda::CUDAGuard guard(qkv.device());
    const auto in = qkv.contiguous();
    auto out = torch::empty({B, 1, H}, qkv.options());
    split = split && kernels::decode_attention_split_supported(static_cast<int>(hd), k_cache.size(2));
    kernels::qk_norm_decode_attention(in.data_ptr(), B, static_cast<int>(heads), static_cast<int>(hd),
                                      f32(q_norm->weight).data_ptr<float>(), f32(q_norm->bias).data_ptr<float>(),
                                      f32(k_norm->weight).data_ptr<float>(), f32(k_norm->bias).data_ptr<float>(),
                                      static_cast<float>(q_norm->options.eps()), k_cache.data_ptr(),
                                      v_cache.data_ptr(), slot.data_ptr<int64_t>(), k_cache.size(2),
                                      attention_scale(hd), out.data_ptr(), stream(), ct == torch::kFloat8_e4m3fn, split);
    return out;
  }
  return std::nullopt;
}

}  // namespace rar::model::fused
