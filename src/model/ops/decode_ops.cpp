// decode_ops.cpp — see decode_ops.h. Each op: its plain path here, its fused path in
// model/ops/cuda/decode_ops_cuda.cpp (through model/ops/fused_paths.h).
#include "model/ops/decode_ops.h"

#include "model/ops/block_ops.h"
#include "model/ops/fused_paths.h"
#include "util/error.h"

namespace rar::model {

namespace {
// auto: the split variant up to this many (row, head) pairs: a guided image's step (2 rows x 16
// heads = 32 pairs in every preset), with room for 3 rows. The bound follows bench/gpu_latency.sh's
// batch-1 rows (bench/RESULTS.md, "Batch 1 measured"); where the split variant stops paying at a
// few more rows is unmeasured.
constexpr int64_t kSplitMaxPairs = 48;
bool use_split(AttentionKernel k, int64_t rows, int64_t heads) {
  return k == AttentionKernel::split || (k == AttentionKernel::automatic && rows * heads <= kSplitMaxPairs);
}
constexpr const char* kAttentionKernelNames[] = {"block", "warp", "split", "auto"};
}  // namespace

AttentionKernel parse_attention_kernel(const std::string& name) {
  for (int i = 0; i < 4; ++i)
    if (name == kAttentionKernelNames[i]) return static_cast<AttentionKernel>(i);
  fail("decode attention kernel: expected block, warp, split or auto, got '", name, "'");
}
const char* attention_kernel_name(AttentionKernel k) { return kAttentionKernelNames[static_cast<int>(k)]; }

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
                                 const torch::Tensor& slot, OpPath path) {
  if (path == OpPath::fused)
    if (auto q = fused::qk_norm_into_cache(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot)) return *q;
  auto [q, k, v] = qk_norm_split(qkv, heads, q_norm, k_norm, path);
  append_to_cache(k_cache, slot, k);
  append_to_cache(v_cache, slot, v);
  return q;
}

torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                               const torch::Tensor& last, const torch::Tensor& valid, OpPath path,
                               AttentionKernel kernel) {
  if (path == OpPath::fused)
    if (auto o = fused::decode_attention(q, k_cache, v_cache, last, kernel != AttentionKernel::block)) return *o;
  const int64_t B = q.size(0), heads = q.size(1), hd = q.size(3);
  // (a cache in another dtype, fp8, is read in q's)
  return at::scaled_dot_product_attention(q, k_cache.to(q.scalar_type()), v_cache.to(q.scalar_type()), valid)
      .transpose(1, 2)
      .reshape({B, 1, heads * hd});
}

torch::Tensor qk_norm_decode_attention(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                       const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache,
                                       torch::Tensor& v_cache, const torch::Tensor& slot, const torch::Tensor& valid,
                                       OpPath path, AttentionKernel kernel) {
  if (path == OpPath::fused)
    if (auto o = fused::qk_norm_decode_attention(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot,
                                                 kernel != AttentionKernel::block, use_split(kernel, qkv.size(0), heads)))
      return *o;
  auto q = qk_norm_into_cache(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot, path);
  return decode_attention(q, k_cache, v_cache, slot, valid, path, kernel);
}

}  // namespace rar::model
