// generator.h — the RAR generator (DESIGN §2–3, §5): a class-conditional decoder-only transformer
// with adaLN-modulated blocks. Submodules and parameters carry the published state-dict names
// (`blocks.{i}.attn.qkv.weight`, `adaln_before_head.adaLN_modulation.1.bias`, ...), so a
// published checkpoint maps 1:1 onto named_parameters().
//
// Shapes: B batch, S image tokens, N new positions, H hidden, V codebook, h heads, hd = H/h.
// Orders, one convention everywhere: τ = (τ_1, ..., τ_S) is the scan order, 1-based as in the
// paper — τ_k is the grid position (row·cols + col) of the k-th token generated. Code holds it
// 0-based: order[k-1] = τ_k (an `orders` tensor row, a std::vector<int64_t> order).
// The equations this file implements: docs/DESIGN.md §1-§3 and §5.
#pragma once
#include <array>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "model/fp8_history.h"
#include "model/generator_config.h"
#include "model/ops/fused.h"

namespace rar::model {

// Keys and values of every layer for the positions fed so far, preallocated once for a batch:
// k[l], v[l] are [B, heads, capacity, hd]; `length` positions are filled.
struct KVCache {
  std::vector<torch::Tensor> k, v;
  int64_t length = 0;
  int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
  int64_t batch() const { return k.empty() ? 0 : k[0].size(0); }
};

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t dim, int64_t heads, double attn_drop);
  // x [B,N,H] -> [B,N,H], the output projection before its dropout (timm's proj_drop: the block
  // applies it inside its gated residual). Without a cache: causal attention over the N positions. With one:
  // this step's keys/values are written at cache positions [past, past+N) and the N queries
  // attend causally over all past+N positions.
  torch::Tensor forward(const torch::Tensor& x, torch::Tensor* k_cache = nullptr, torch::Tensor* v_cache = nullptr,
                        int64_t past = 0);

  int64_t heads;
  double attn_drop;
  OpPath path = OpPath::fused;  // the ops' path (GeneratorImpl::use_path sets every module's)
  bool fp8 = false;             // qkv and proj in fp8 in training (GeneratorImpl::use_fp8)
  Fp8Rows fp8_rows;             // their operands' delayed scaling (the block's rows; none for current)
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::nn::LayerNorm q_norm{nullptr}, k_norm{nullptr};
};
TORCH_MODULE(Attention);

// timm's Mlp: fc1 -> exact GELU -> dropout -> fc2 (-> dropout: the block applies the last one
// inside its gated residual).
struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t dim, int64_t hidden, double drop);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
  OpPath path = OpPath::fused;
  // In training, recompute fc1's output in backward instead of keeping it (model/ops mlp_recomputing;
  // GeneratorImpl::set_recompute_mlp sets every block's).
  bool recompute_hidden = false;
  bool fp8 = false;  // fc1 and fc2 in fp8 in training (GeneratorImpl::use_fp8)
  Fp8Rows fp8_rows;  // their operands' delayed scaling
};
TORCH_MODULE(Mlp);

// One transformer block with adaLN modulation from the per-position condition c (DESIGN §3.6).
// The dropout of each branch's output (`dropout`, in training) is applied in the gated residual.
struct BlockImpl : torch::nn::Module {
  BlockImpl(const GeneratorConfig& cfg);
  // x [B,N,H], silu_c = SiLU(c) [B,N,H] (computed once for all blocks) -> [B,N,H]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& silu_c, torch::Tensor* k_cache = nullptr,
                        torch::Tensor* v_cache = nullptr, int64_t past = 0);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};  // SiLU, Linear(H, 6H)
  double dropout = 0;
  OpPath path = OpPath::fused;
  bool fp8 = false;  // the adaLN products in fp8 in training (GeneratorImpl::use_fp8)
  Fp8Rows fp8_rows;  // their operands' delayed scaling
};
TORCH_MODULE(Block);

// `adaln_before_head`: non-affine LayerNorm modulated by the condition (scale first, DESIGN §3.7).
struct FinalLayerImpl : torch::nn::Module {
  explicit FinalLayerImpl(int64_t dim);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& silu_c);  // silu_c = SiLU(c)
  torch::nn::LayerNorm norm_final{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};  // SiLU, Linear(H, 2H)
  OpPath path = OpPath::fused;
};
TORCH_MODULE(FinalLayer);

struct GeneratorImpl : torch::nn::Module {
  explicit GeneratorImpl(const GeneratorConfig& cfg);

  // The published initialisation (DESIGN §4): truncated normal 0.02 for linear/embedding weights
  // and the position/timestep tables, zero biases, unit LayerNorm weights, zero cls_token, and
  // every adaLN output layer zeroed.
  void reset_parameters();

  // The path every op of the model takes (model/ops/fused.h): fused kernels where they apply (the
  // default) or the plain LibTorch ops (the reference; `rar bench train --plain`, the tests'
  // comparisons). Set on every module of the model.
  void use_path(OpPath p);
  OpPath path() const { return path_; }
  // `training.fp8`: the blocks' products (adaLN, qkv, proj, fc1, fc2) in fp8 in training (model/ops/fp8.h).
  // Decided by training mode, not grad mode, so a recomputed block's recomputation repeats its
  // first forward; evaluation and sampling keep the products in the model's dtype.
  // delayed_history > 0 (`training.fp8_scaling: delayed`, `training.fp8_amax_history`): delayed
  // scaling over that many steps (model/fp8_history.h; the history is new, holding no step); 0:
  // current scaling.
  void use_fp8(bool on, int64_t delayed_history = 0);
  bool fp8() const { return fp8_; }
  // Delayed scaling's history (null without it): a training step advances it after its backward.
  Fp8History* fp8_history() const { return fp8_history_.get(); }

  // Class ids [B] -> condition token ids (DESIGN §3.1); drop[b] (optional bool [B]) selects the null class.
  torch::Tensor condition_tokens(const torch::Tensor& classes, const torch::Tensor& drop = {}) const;

  // Training / scoring forward (DESIGN §3). tokens [B,S] int64 in raster layout, condition [B]
  // condition token ids, orders [B,S] a permutation per sample (undefined = raster).
  // Returns logits [B,S+1,V]: position j < S predicts tokens[τ_{j+1}]; position S is unused.
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& condition,
                        const torch::Tensor& orders = {});

  // --- incremental decoding with a KV cache (DESIGN §5) ---
  // dtype: the model's unless given (fp8 e4m3: `--kv-cache fp8`, see model/ops/decode_ops to_cache_dtype)
  KVCache make_cache(int64_t batch, int64_t capacity, std::optional<at::ScalarType> dtype = std::nullopt) const;
  // Step 0: feeds cls (index 0) and the class token (index 1, target position first_pos).
  // Returns the logits for the first token [B,V] (float32).
  torch::Tensor decode_prefill(const torch::Tensor& condition, int64_t first_pos, KVCache& cache);
  // Step t >= 1: feeds token x[τ_t] [B] (sampled at step t-1) at index 1+t with its position
  // `pos` = τ_t and target position `next_pos` = τ_{t+1}. Returns logits [B,V] for x[τ_{t+1}]
  // (decode_window with one position).
  torch::Tensor decode_step(const torch::Tensor& token, int64_t t, int64_t pos, int64_t next_pos,
                            const torch::Tensor& condition, KVCache& cache);
  // Steps t .. t+W-1 at once (speculative decoding, sampling/speculative): feeds tokens [B,W] —
  // x[τ_t] .. x[τ_{t+W-1}] — at indices 1+t .. t+W with positions pos[j] = τ_{t+j} and target
  // positions next_pos[j] = τ_{t+j+1}, each attending to the cache and to the window's earlier
  // tokens. Returns logits [B,W,V] float32: column j is what W one-position steps give at step
  // t+j. The cache must hold t+1 positions (a caller that discards a window's tail sets
  // cache.length back; the slots after it are overwritten).
  torch::Tensor decode_window(const torch::Tensor& tokens, int64_t t, const std::vector<int64_t>& pos,
                              const std::vector<int64_t>& next_pos, const torch::Tensor& condition, KVCache& cache);

  GeneratorConfig cfg;
  torch::Tensor cls_token, pos_embed, target_aware_pos_embed, timesteps_embeddings;
  torch::nn::Embedding embeddings{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  std::vector<Block> block_list;  // the same modules, typed
  FinalLayer adaln_before_head{nullptr};
  torch::nn::Linear lm_head{nullptr};
  // Recomputed activations in training (the config's `use_checkpoint` / `checkpoint_layers`): the
  // first `recompute_layers` blocks (all of them when >= layers) keep only their input and
  // recompute their activations during backward (model/recompute.h); the rest keep theirs. 0 = off.
  int64_t recompute_layers = 0;
  // `model.generator.recompute_mlp`: every block's MLP recomputes fc1's output in backward instead of
  // keeping it ([B,N,4H] per block) — one more product per block; values and gradients unchanged.
  void set_recompute_mlp(bool on);
  bool recompute_mlp() const { return recompute_mlp_; }

 private:
  OpPath path_ = OpPath::fused;
  bool fp8_ = false;
  std::shared_ptr<Fp8History> fp8_history_;
  bool recompute_mlp_ = false;
  // DESIGN §3.6: the L blocks over new positions h, c [B,N,H] (appending to the cache if given).
  torch::Tensor run_blocks(torch::Tensor h, const torch::Tensor& c, KVCache* cache);
  // DESIGN §3.7: adaLN head, h, c [B,N,H] -> logits [B,N,V].
  torch::Tensor head(const torch::Tensor& h, const torch::Tensor& c);
};
TORCH_MODULE(Generator);

}  // namespace rar::model
