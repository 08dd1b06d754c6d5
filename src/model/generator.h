// generator.h — the RAR generator (SPEC §2–3, §5): a class-conditional decoder-only transformer
// with adaLN-modulated blocks. Submodules and parameters carry the published state-dict names
// (`blocks.{i}.attn.qkv.weight`, `adaln_before_head.adaLN_modulation.1.bias`, ...), so a
// published checkpoint maps 1:1 onto named_parameters().
//
// Shapes: B batch, S image tokens, N new positions, H hidden, V codebook, h heads, hd = H/h.
#pragma once
#include <array>
#include <functional>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "model/generator_config.h"

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
  AttentionImpl(int64_t dim, int64_t heads, double attn_drop, double proj_drop);
  // x [B,N,H] -> [B,N,H]. Without a cache: causal attention over the N positions. With one:
  // this step's keys/values are written at cache positions [past, past+N) and the N queries
  // attend causally over all past+N positions.
  torch::Tensor forward(const torch::Tensor& x, torch::Tensor* k_cache = nullptr, torch::Tensor* v_cache = nullptr,
                        int64_t past = 0);
  // Static-shape decoding: x [B,1,H]; this position's key/value go to cache slot `slot` ([1]
  // int64 on the device), and the query attends over every cache slot where `valid` ([1,1,1,cap]
  // bool) is set. Same shapes at every step (CUDA-graph capturable).
  torch::Tensor forward_slot(const torch::Tensor& x, torch::Tensor& k_cache, torch::Tensor& v_cache,
                             const torch::Tensor& slot, const torch::Tensor& valid);

  int64_t heads;
  double attn_drop;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::nn::LayerNorm q_norm{nullptr}, k_norm{nullptr};
  torch::nn::Dropout proj_drop{nullptr};
};
TORCH_MODULE(Attention);

// timm's Mlp: fc1 -> exact GELU -> dropout -> fc2 -> dropout.
struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t dim, int64_t hidden, double drop);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(Mlp);

// The residual stream h = x + gate·y with the add still to do (gate undefined: h = x). The decode
// step hands each block's MLP residual on to the next block's LN1 (or the head's LayerNorm), which
// forms it in the same pass as its modulation.
struct Residual {
  torch::Tensor x, gate, y;
};

// One transformer block with adaLN modulation from the per-position condition c (SPEC §3.6).
struct BlockImpl : torch::nn::Module {
  BlockImpl(const GeneratorConfig& cfg);
  // x [B,N,H], silu_c = SiLU(c) [B,N,H] (computed once for all blocks) -> [B,N,H]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& silu_c, torch::Tensor* k_cache = nullptr,
                        torch::Tensor* v_cache = nullptr, int64_t past = 0);
  // The block given its modulation m = (shift_a, scale_a, gate_a, shift_m, scale_m, gate_m) and
  // how its attention runs (`attend`: the modulated LN1 output -> attention output).
  torch::Tensor modulated(const torch::Tensor& x, const std::array<torch::Tensor, 6>& m,
                          const std::function<torch::Tensor(const torch::Tensor&)>& attend);
  // The same from and to a residual stream whose last add is pending (see Residual).
  Residual modulated(const Residual& h, const std::array<torch::Tensor, 6>& m,
                     const std::function<torch::Tensor(const torch::Tensor&)>& attend);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};  // SiLU, Linear(H, 6H)
};
TORCH_MODULE(Block);

// `adaln_before_head`: non-affine LayerNorm modulated by the condition (scale first, SPEC §3.7).
struct FinalLayerImpl : torch::nn::Module {
  explicit FinalLayerImpl(int64_t dim);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& silu_c);  // silu_c = SiLU(c)
  // m = W·SiLU(c) + b [.., 2H] given: (scale, shift) = split2(m)
  torch::Tensor modulated(const torch::Tensor& x, const torch::Tensor& m);
  torch::Tensor modulated(const Residual& h, const torch::Tensor& m);
  torch::nn::LayerNorm norm_final{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};  // SiLU, Linear(H, 2H)
};
TORCH_MODULE(FinalLayer);

// What a static-shape decode step reads (make_static_decode, decode_step_static). Every step has
// the same shapes and tensor addresses — the step index is a device tensor written before each
// step — so one step can be captured in a CUDA graph and replayed (sampling/engine).
struct StaticDecode {
  torch::Tensor token;      // [R] int64: x[τ_{t-1}] (0-based scan order), fed at step t (written per step)
  torch::Tensor step;       // [1] int64: t >= 1 (written per step); the new position is cache slot t+1
  torch::Tensor condition;  // [R - null_rows] int64: condition token ids of the class rows
  torch::Tensor position;   // [S,H]: row t = P[2+τ_{t-1}] + T[2+τ_t] (row 0 unused)
  torch::Tensor slots;      // [capacity] int64: 0, 1, 2, ... (the attention mask compares them to t+1)
  int64_t null_rows = 0;    // the last null_rows rows are the null class (the guided batch's second half)
  // adaLN products W·SiLU(emb(c) + E[j]) + b depend only on a row's condition c and the position j,
  // and a batch has few distinct conditions (the null class for half of a guided batch; a class
  // per 50 images in the ADM protocol). They are computed once per batch for every distinct
  // condition and position — table[u*(S+2) + j], [U*(S+2), 6H] per block and [U*(S+2), 2H] for the
  // head — and a step gathers its rows. The last table_rows.size(0) rows use the tables; the first
  // R - that many (class rows, when all distinct classes would make the tables larger than the
  // budget) run the adaLN matmuls at every step.
  std::vector<torch::Tensor> table_block;
  torch::Tensor table_head;
  torch::Tensor table_rows;  // [rows served] int64: u*(S+2) of each served row's condition
};
struct GeneratorImpl : torch::nn::Module {
  explicit GeneratorImpl(const GeneratorConfig& cfg);

  // The published initialisation (SPEC §4): truncated normal 0.02 for linear/embedding weights
  // and the position/timestep tables, zero biases, unit LayerNorm weights, zero cls_token, and
  // every adaLN output layer zeroed.
  void reset_parameters();

  // Class ids [B] -> condition token ids (SPEC §3.1); drop[b] (optional bool [B]) selects the null class.
  torch::Tensor condition_tokens(const torch::Tensor& classes, const torch::Tensor& drop = {}) const;

  // Training / scoring forward (SPEC §3). tokens [B,S] int64 in raster layout, condition [B]
  // condition token ids, orders [B,S] a permutation per sample (undefined = raster).
  // Returns logits [B,S+1,V]: position j < S predicts tokens[τ_{j+1}]; position S is unused.
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& condition,
                        const torch::Tensor& orders = {});

  // --- incremental decoding with a KV cache (SPEC §5) ---
  // dtype: the model's unless given (fp8 e4m3: `--kv-cache fp8`, see model/fused_ops to_cache_dtype)
  KVCache make_cache(int64_t batch, int64_t capacity, std::optional<at::ScalarType> dtype = std::nullopt) const;
  // Step 0: feeds cls (index 0) and the class token (index 1, target position first_pos).
  // Returns the logits for the first token [B,V] (float32).
  torch::Tensor decode_prefill(const torch::Tensor& condition, int64_t first_pos, KVCache& cache);
  // Step t >= 1: feeds token x[τ_t] [B] (sampled at step t-1) at index 1+t with its position
  // `pos` = τ_t and target position `next_pos` = τ_{t+1}. Returns logits [B,V] for x[τ_{t+1}].
  torch::Tensor decode_step(const torch::Tensor& token, int64_t t, int64_t pos, int64_t next_pos,
                            const torch::Tensor& condition, KVCache& cache);

  // Static-shape decoding for R = condition.size(0) + null_rows rows along `order` (0-based scan
  // order): the tables of StaticDecode, zeroed token/step buffers. The cache must be zeroed
  // (masked slots are read) and hold S+1 slots; decode_prefill fills slots 0 and 1. The class rows'
  // adaLN tables are made when they fit in `table_bytes` (else only the null class's).
  StaticDecode make_static_decode(const torch::Tensor& condition, int64_t null_rows,
                                  const std::vector<int64_t>& order, int64_t capacity,
                                  int64_t table_bytes = int64_t(1) << 30);
  // A new batch with the same rows: rewrites s's tensors in place (a graph captured on them stays
  // valid) when its tables keep their shapes; false when they would not (make a new one).
  bool update_static_decode(StaticDecode& s, const torch::Tensor& condition, int64_t table_bytes = int64_t(1) << 30);
  KVCache make_zeroed_cache(int64_t batch, int64_t capacity, std::optional<at::ScalarType> dtype = std::nullopt) const;
  // Step t = s.step (1..S-1): the same logits as decode_step(s.token, t, τ_{t-1}, τ_t, ...) [R,V] float32.
  torch::Tensor decode_step_static(const StaticDecode& s, KVCache& cache);

  GeneratorConfig cfg;
  torch::Tensor cls_token, pos_embed, target_aware_pos_embed, timesteps_embeddings;
  torch::nn::Embedding embeddings{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  std::vector<Block> block_list;  // the same modules, typed
  FinalLayer adaln_before_head{nullptr};
  torch::nn::Linear lm_head{nullptr};
  // Activation checkpointing in training (`use_checkpoint`): the first `checkpoint_layers` blocks
  // (all of them when >= layers) keep only their input and recompute their activations during
  // backward (model/checkpoint.h); the rest keep theirs. 0 = off.
  int64_t checkpoint_layers = 0;

 private:
  // SPEC §3.6: the L blocks over new positions h, c [B,N,H] (appending to the cache if given).
  torch::Tensor run_blocks(torch::Tensor h, const torch::Tensor& c, KVCache* cache);
  // SPEC §3.7: adaLN head, h, c [B,N,H] -> logits [B,N,V].
  torch::Tensor head(const torch::Tensor& h, const torch::Tensor& c);
  // The adaLN tables of StaticDecode for these conditions: (table_block, table_head, table_rows).
  struct AdaTables {
    std::vector<torch::Tensor> block;
    torch::Tensor head, rows;
  };
  AdaTables ada_tables(const torch::Tensor& class_conditions, int64_t null_rows, int64_t table_bytes);
};
TORCH_MODULE(Generator);

}  // namespace rar::model
