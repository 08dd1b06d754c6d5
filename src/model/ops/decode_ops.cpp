// decode_ops.cpp — see decode_ops.h. Each op: its plain path here, its fused path in
// model/ops/cuda/decode_ops_cuda.cpp (through model/ops/fused_paths.h).
#include "model/ops/decode_ops.h"

#include <atomic>
#include <cstdlib>

#include "model/ops/block_ops.h"
#include "model/ops/fused_paths.h"
#include "util/error.h"

namespace rar::model {

namespace {
// The decode-attention kernel: 0 block, 1 warp, 2 split (the fused step's split variant at every
// batch size), 3 auto (split for few rows, warp otherwise). auto is the default: the warp variant
// is faster at every fill and cache dtype measured at batch 256, the split variant at batch 1
// (one rar_xl image: 456 -> 392 ms, bench/RESULTS.md); RAR_DECODE_ATTENTION sets the starting value.
enum AttentionKernel { kBlock, kWarp, kSplit, kAuto };
constexpr const char* kAttentionKernelNames[] = {"block", "warp", "split", "auto"};
int attention_kernel_id(const std::string& name) {
  for (int i = 0; i < 4; ++i)
    if (name == kAttentionKernelNames[i]) return i;
  return -1;
}
std::atomic<int> g_attention{[] {
  const char* e = std::getenv("RAR_DECODE_ATTENTION");
  const int id = e ? attention_kernel_id(e) : -1;
  return id >= 0 ? id : int{kAuto};
}()};
// auto: the split variant up to this many (row, head) pairs: a guided image's step (2 rows x 16
// heads = 32 pairs in every preset; measured faster on rar_b and rar_xl), with room for 3 rows
// (unmeasured). Where it stops paying at a few more rows is still to be measured
// (bench/gpu_latency.sh: 2-8 images), so no further yet.
constexpr int64_t kSplitMaxPairs = 48;
bool use_split(int64_t rows, int64_t heads) {
  const int k = g_attention.load();
  return k == kSplit || (k == kAuto && rows * heads <= kSplitMaxPairs);
}
// An opt-in switch: on when the environment variable is "1".
bool env_on(const char* name) {
  const char* e = std::getenv(name);
  return e && std::string(e) == "1";
}
// The skinny linear kernels and programmatic dependent launch for decode steps of a few rows:
// opt-in (measured on one rar_xl image: the skinny products slower than cuBLAS, PDL no gain).
std::atomic<bool> g_skinny_linear{env_on("RAR_SKINNY_LINEAR")};
std::atomic<bool> g_pdl{env_on("RAR_PDL")};
}  // namespace

void set_pdl(bool on) { g_pdl.store(on); }
bool pdl_enabled() { return g_pdl.load(); }
void set_skinny_linear(bool on) { g_skinny_linear.store(on); }
bool skinny_linear_enabled() { return g_skinny_linear.load(); }

torch::Tensor decode_linear(const torch::nn::LinearImpl& l, const torch::Tensor& x, bool gelu) {
  if (g_skinny_linear.load()) {
    // a speculative window [R,W,in] is R·W rows of one position each
    const bool window = x.dim() == 3 && x.size(1) > 1 && x.is_contiguous();
    if (auto y = fused::skinny_linear(window ? x.view({-1, 1, x.size(2)}) : x, l.weight, l.bias, gelu))
      return window ? y->view({x.size(0), x.size(1), -1}) : *y;
  }
  auto y = at::linear(x, l.weight, l.bias);
  return gelu ? at::gelu(y) : y;
}

torch::Tensor decode_ln_linear(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& table,
                               const torch::Tensor& index, int64_t shift_col, int64_t scale_col,
                               const torch::nn::LinearImpl& lin, bool gelu) {
  if (g_skinny_linear.load())
    if (auto y = fused::skinny_ln_linear(ln, x, table, index, shift_col, scale_col, lin.weight, lin.bias, gelu))
      return *y;
  const int64_t H = x.size(-1);
  const auto rows = table.index_select(0, index).unsqueeze(1);  // [R,1,n]
  return decode_linear(lin, ln_modulate(ln, x, rows.narrow(-1, shift_col, H), rows.narrow(-1, scale_col, H)), gelu);
}

torch::Tensor decode_linear_residual(torch::Tensor& x, const torch::Tensor& h, const torch::nn::LinearImpl& lin,
                                     const torch::Tensor& table, const torch::Tensor& index, int64_t gate_col) {
  if (g_skinny_linear.load())
    if (auto y = fused::skinny_linear_residual(x, h, lin.weight, lin.bias, table, index, gate_col)) return *y;
  const auto gate = table.index_select(0, index).unsqueeze(1).narrow(-1, gate_col, x.size(-1));
  return gated_residual(x, gate, decode_linear(lin, h));
}

void set_decode_attention_kernel(const std::string& name) {
  const int id = attention_kernel_id(name);
  check(id >= 0, "decode attention kernel: expected block, warp, split or auto, got '", name, "'");
  g_attention.store(id);
}
std::string decode_attention_kernel() { return kAttentionKernelNames[g_attention.load()]; }

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
  if (auto q = fused::qk_norm_into_cache(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot)) return *q;
  auto [q, k, v] = qk_norm_split(qkv, heads, q_norm, k_norm);
  append_to_cache(k_cache, slot, k);
  append_to_cache(v_cache, slot, v);
  return q;
}

torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                               const torch::Tensor& last, const torch::Tensor& valid) {
  if (auto o = fused::decode_attention(q, k_cache, v_cache, last, g_attention.load() != kBlock)) return *o;
  const int64_t B = q.size(0), heads = q.size(1), hd = q.size(3);
  // (a cache in another dtype, fp8, is read in q's)
  return at::scaled_dot_product_attention(q, k_cache.to(q.scalar_type()), v_cache.to(q.scalar_type()), valid)
      .transpose(1, 2)
      .reshape({B, 1, heads * hd});
}

torch::Tensor qk_norm_decode_attention(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                       const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache,
                                       torch::Tensor& v_cache, const torch::Tensor& slot, const torch::Tensor& valid) {
  if (auto o = fused::qk_norm_decode_attention(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot,
                                               g_attention.load() != kBlock, use_split(qkv.size(0), heads)))
    return *o;
  auto q = qk_norm_into_cache(qkv, heads, q_norm, k_norm, k_cache, v_cache, slot);
  return decode_attention(q, k_cache, v_cache, slot, valid);
}

}  // namespace rar::model
