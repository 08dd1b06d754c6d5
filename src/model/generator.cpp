// generator.cpp — the RAR generator, written to read like the published rar.py: each step of the
// forward pass is one commented statement (docs/DESIGN.md, "The generator"). The speed work lives
// elsewhere: the ops' fused paths in model/ops/, the static decode step in sampling/static_decode.
#include "model/generator.h"

#include "model/recompute.h"
#include "model/ops/block_ops.h"
#include "model/ops/decode_ops.h"
#include "model/init.h"
#include "util/error.h"

namespace rar::model {

namespace F = torch::nn::functional;
using torch::indexing::Slice;

namespace {

torch::nn::LayerNorm layer_norm(int64_t dim, bool affine = true) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6).elementwise_affine(affine));
}

}  // namespace

// ---------------------------------------------------------------- attention

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads_, double attn_drop_) : heads(heads_), attn_drop(attn_drop_) {
  qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  q_norm = register_module("q_norm", layer_norm(dim / heads));
  k_norm = register_module("k_norm", layer_norm(dim / heads));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, torch::Tensor* k_cache, torch::Tensor* v_cache,
                                     int64_t past) {
  const int64_t B = x.size(0), N = x.size(1), H = x.size(2);
  // qkv projection, q/k LayerNorm per head (model/ops)
  const bool in_fp8 = fp8 && is_training();  // (decided by training mode: a recomputed block repeats itself)
  auto fp8_mode = [&](int64_t rows) { return fp8_rows.mode(in_fp8, rows, kFp8LinearOperands, x.device()); };
  auto [q, k, v] = qk_norm_split(linear(*qkv, x, path, fp8_mode(Fp8History::kQkv)), heads, q_norm, k_norm, path);
  bool causal = true;
  std::optional<torch::Tensor> mask;  // [N, past+N] bool: keys each new query sees
  if (k_cache) {
    // Append this step's keys/values, then attend over everything cached so far
    //   (a cache may hold another dtype than the model, fp8: model/ops to_cache_dtype)
    k_cache->index({Slice(), Slice(), Slice(past, past + N)}).copy_(to_cache_dtype(k, k_cache->scalar_type()));
    v_cache->index({Slice(), Slice(), Slice(past, past + N)}).copy_(to_cache_dtype(v, v_cache->scalar_type()));
    k = k_cache->index({Slice(), Slice(), Slice(0, past + N)}).to(q.scalar_type());
    v = v_cache->index({Slice(), Slice(), Slice(0, past + N)}).to(q.scalar_type());
    // One new query sees every cached key; several new queries need the causal mask. SDPA's is
    // aligned to the top-left, right only when nothing was cached before (the prefill); after
    // that (a speculative window) new position i sees keys 0 .. past+i: an explicit mask.
    causal = N > 1 && past == 0;
    if (N > 1 && past > 0) {
      auto opts = torch::TensorOptions().dtype(torch::kInt64).device(x.device());
      mask = torch::arange(past + N, opts).unsqueeze(0) <= torch::arange(past, past + N, opts).unsqueeze(1);
    }
  }
  // softmax(q·kᵀ/√hd + causal mask)·v
  auto o = at::scaled_dot_product_attention(q, k, v, mask, is_training() ? attn_drop : 0.0, causal);
  o = o.transpose(1, 2).reshape({B, N, H});
  return linear(*proj, o, path, fp8_mode(Fp8History::kProj));
}

// ---------------------------------------------------------------- MLP

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, double p) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
  drop = register_module("drop", torch::nn::Dropout(p));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  // fc1 -> exact GELU -> dropout -> fc2 (one op keeping only fc1's output and the mask; with
  // recompute_hidden one op keeping x and the mask)
  const bool in_fp8 = fp8 && is_training();
  auto fp8_mode = [&](int64_t rows, int64_t n) { return fp8_rows.mode(in_fp8, rows, n, x.device()); };
  const int64_t mlp = Fp8History::kMlp;
  if (recompute_hidden && is_training())
    return mlp_recomputing(x, *fc1, *fc2, drop->options.p(), path, fp8_mode(mlp, kFp8MlpOperands));
  return gelu_dropout_linear(linear(*fc1, x, path, fp8_mode(mlp + kFp8MlpFc1, kFp8LinearOperands)), *fc2,
                             drop->options.p(), is_training(), path, fp8_mode(mlp + kFp8MlpFc2, kFp8LinearOperands));
}

// ---------------------------------------------------------------- block

BlockImpl::BlockImpl(const GeneratorConfig& cfg) : dropout(cfg.dropout) {
  norm1 = register_module("norm1", layer_norm(cfg.hidden));
  attn = register_module("attn", Attention(cfg.hidden, cfg.heads, cfg.attn_dropout));
  norm2 = register_module("norm2", layer_norm(cfg.hidden));
  mlp = register_module("mlp", Mlp(cfg.hidden, cfg.mlp, cfg.dropout));
  adaLN_modulation = register_module(
      "adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(cfg.hidden, 6 * cfg.hidden)));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& silu_c, torch::Tensor* k_cache,
                                 torch::Tensor* v_cache, int64_t past) {
  // (shift_a, scale_a, gate_a, shift_m, scale_m, gate_m) = split6(W·SiLU(c) + b); SiLU(c) is
  // computed once for all blocks by the caller (adaLN_modulation[0] is that SiLU)
  //   (model/ops adaln_split6: in training two matmuls, so that the shifts are not kept for backward)
  const bool in_fp8 = fp8 && is_training();
  const auto [shift_a, scale_a, gate_a, shift_m, scale_m, gate_m] =
      adaln_split6(*adaLN_modulation[1]->as<torch::nn::Linear>(), silu_c, is_training(), path,
                   fp8_rows.mode(in_fp8, Fp8History::kAdaln, kFp8AdalnOperands, silu_c.device()));
  // h += gate_a · Dropout(Attn(LN1(h)·(1 + scale_a) + shift_a))
  //   (h and its modulated LN from one op, whose backward sums h's two gradients: model/ops)
  const double p = is_training() ? dropout : 0.0;
  auto [h, n1] = ln_modulate_branch(norm1, x_in, shift_a, scale_a, path);
  auto x = gated_residual(h, gate_a, attn(n1, k_cache, v_cache, past), p, path);
  // h += gate_m · Dropout(MLP(LN2(h)·(1 + scale_m) + shift_m))
  auto [h2, n2] = ln_modulate_branch(norm2, x, shift_m, scale_m, path);
  return gated_residual(h2, gate_m, mlp(n2), p, path);
}

// ---------------------------------------------------------------- final layer

FinalLayerImpl::FinalLayerImpl(int64_t dim) {
  norm_final = register_module("norm_final", layer_norm(dim, /*affine=*/false));
  adaLN_modulation =
      register_module("adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(dim, 2 * dim)));
}

torch::Tensor FinalLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& silu_c) {
  // (scale, shift) = split2(W·SiLU(c) + b) — scale first here; LN_noaffine(x)·(1 + scale) + shift
  const auto m = linear(*adaLN_modulation[1]->as<torch::nn::Linear>(), silu_c, path).chunk(2, -1);
  return ln_modulate(norm_final, x, m[1], m[0], path);
}

// ---------------------------------------------------------------- generator

GeneratorImpl::GeneratorImpl(const GeneratorConfig& c) : cfg(c) {
  cfg.validate();
  const int64_t H = cfg.hidden;
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, H}));
  embeddings = register_module("embeddings", torch::nn::Embedding(cfg.vocab_rows(), H));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, cfg.pos_rows(), H}));
  target_aware_pos_embed = register_parameter("target_aware_pos_embed", torch::zeros({1, cfg.pos_rows(), H}));
  timesteps_embeddings = register_parameter("timesteps_embeddings", torch::zeros({1, cfg.timestep_rows(), H}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.layers; ++i) {
    block_list.push_back(Block(cfg));
    blocks->push_back(block_list.back());
  }
  adaln_before_head = register_module("adaln_before_head", FinalLayer(H));
  lm_head = register_module("lm_head", torch::nn::Linear(H, cfg.codebook));
  reset_parameters();
}

void GeneratorImpl::use_path(OpPath p) {
  path_ = p;
  for (auto& b : block_list) b->path = b->attn->path = b->mlp->path = p;
  adaln_before_head->path = p;
}

void GeneratorImpl::use_fp8(bool on, int64_t delayed_history) {
  fp8_ = on;
  fp8_history_ = on && delayed_history > 0
                     ? std::make_shared<Fp8History>(static_cast<int64_t>(block_list.size()), delayed_history)
                     : nullptr;
  for (size_t i = 0; i < block_list.size(); ++i) {
    auto& b = block_list[i];
    b->fp8 = b->attn->fp8 = b->mlp->fp8 = on;
    b->fp8_rows = b->attn->fp8_rows = b->mlp->fp8_rows =
        Fp8Rows{fp8_history_, static_cast<int64_t>(i) * Fp8History::kPerBlock};
  }
}

void GeneratorImpl::set_recompute_mlp(bool on) {
  recompute_mlp_ = on;
  for (auto& b : block_list) b->mlp->recompute_hidden = on;
}

void GeneratorImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  for (auto& mod : modules(/*include_self=*/false)) {
    if (auto* lin = mod->as<torch::nn::Linear>()) {
      trunc_normal_(lin->weight);
      lin->bias.zero_();
    } else if (auto* emb = mod->as<torch::nn::Embedding>()) {
      trunc_normal_(emb->weight);
    } else if (auto* ln = mod->as<torch::nn::LayerNorm>()) {
      if (ln->weight.defined()) ln->weight.fill_(1.0);
      if (ln->bias.defined()) ln->bias.zero_();
    }
  }
  trunc_normal_(pos_embed);
  trunc_normal_(target_aware_pos_embed);
  trunc_normal_(timesteps_embeddings);
  cls_token.zero_();
  auto zero_adaln = [](torch::nn::Sequential& seq) {
    auto* lin = seq[1]->as<torch::nn::Linear>();
    lin->weight.zero_();
    lin->bias.zero_();
  };
  for (auto& b : block_list) zero_adaln(b->adaLN_modulation);
  zero_adaln(adaln_before_head->adaLN_modulation);
}

torch::Tensor GeneratorImpl::condition_tokens(const torch::Tensor& classes, const torch::Tensor& drop) const {
  auto ids = classes + (cfg.codebook + 1);
  if (drop.defined()) ids = torch::where(drop, torch::full_like(ids, cfg.null_class_token()), ids);
  return ids;
}

torch::Tensor GeneratorImpl::run_blocks(torch::Tensor h, const torch::Tensor& c, KVCache* cache) {
  const int64_t past = cache ? cache->length : 0;
  // SiLU(c), shared by every block's adaLN: computed and cast to the matmul dtype once; each block
  // takes its own use of it so its gradients add up in float32 (model/ops shared_cast). In fp8
  // training the blocks take it as it is: their adaLN casts it to e4m3 itself and returns its
  // gradient in its dtype (no bf16 copy either way).
  const auto silu = F::silu(c);
  const bool fp8_adaln = fp8_ && is_training();
  const auto silu_lp = fp8_adaln ? torch::Tensor() : to_compute(silu.detach());
  for (size_t l = 0; l < block_list.size(); ++l) {
    const auto silu_c = fp8_adaln ? silu : shared_cast(silu, silu_lp);
    if (cache) h = block_list[l](h, silu_c, &cache->k[l], &cache->v[l], past);
    else if (static_cast<int64_t>(l) < recompute_layers && is_training() && torch::GradMode::is_enabled())
      h = recomputed_block(block_list[l], h, silu_c);
    else h = block_list[l](h, silu_c);
  }
  if (cache) cache->length += h.size(1);
  return h;
}

torch::Tensor GeneratorImpl::head(const torch::Tensor& h, const torch::Tensor& c) {
  // h = LN_noaffine(h) * (1 + scale) + shift; logits = lm_head(h)
  return linear(*lm_head, adaln_before_head(h, to_compute(F::silu(c))), path_);
}

torch::Tensor GeneratorImpl::forward(const torch::Tensor& tokens, const torch::Tensor& condition,
                                     const torch::Tensor& orders) {
  const int64_t B = tokens.size(0), S = cfg.seq_len, H = cfg.hidden;
  check(tokens.dim() == 2 && tokens.size(1) == S, "generator: tokens must be [B,", S, "], got ", tokens.sizes());
  check(condition.dim() == 1 && condition.size(0) == B, "generator: condition must be [", B, "]");
  check(!orders.defined() || orders.sizes() == tokens.sizes(), "generator: orders must be [B,", S, "]");
  const auto P = pos_embed[0], T = target_aware_pos_embed[0], E = timesteps_embeddings[0];

  // 1-2. Sequence of S+2 vectors: cls token, embedding of the class id, then the image tokens in
  //      the order τ: index 1+k holds x[τ_k].
  auto cond = embeddings(condition);                                        // [B,H]
  auto ordered = orders.defined() ? tokens.gather(1, orders) : tokens;      // [B,S]
  auto h = torch::cat({cls_token.expand({B, 1, H}), cond.unsqueeze(1), embeddings(ordered)}, 1);

  // 3. Position: h[0] += P[0]; h[1] += P[1]; h[1+k] += P[2+τ_k].
  // 4. Target-aware position: h[1+k] += T[2+τ_{k+1}] for k = 0..S-1 (nothing on h[0], h[S+1]).
  //    Rows are gathered straight from the tables: no per-sample copy of a whole table.
  torch::Tensor image_pos, target_pos;  // [B,S,H] or [1,S,H]
  if (orders.defined()) {
    image_pos = F::embedding(orders + 2, P);
    target_pos = F::embedding(orders + 2, T);
  } else {
    image_pos = P.narrow(0, 2, S).unsqueeze(0);
    target_pos = T.narrow(0, 2, S).unsqueeze(0);
  }
  auto zero = torch::zeros({1, 1, H}, h.options()).expand({target_pos.size(0), 1, H});
  auto position = torch::cat({P.narrow(0, 0, 2).unsqueeze(0).expand({image_pos.size(0), 2, H}), image_pos}, 1);
  auto target_aware = torch::cat({zero, target_pos, zero}, 1);
  h = h + position + target_aware;

  // 5. Condition per position: c[j] = embedding(class id) + E[j], j = 0..S+1.
  auto c = cond.unsqueeze(1) + E.narrow(0, 0, S + 2).unsqueeze(0);

  // 6. L blocks of causal self-attention.
  h = run_blocks(h, c, nullptr);

  // 7. Drop index 0; adaLN head on the remaining S+1 positions.
  return head(h.narrow(1, 1, S + 1), c.narrow(1, 1, S + 1));
}

KVCache GeneratorImpl::make_cache(int64_t batch, int64_t capacity, std::optional<at::ScalarType> dtype) const {
  KVCache cache;
  auto opts = cls_token.options().requires_grad(false);
  if (dtype) opts = opts.dtype(*dtype);
  for (int64_t l = 0; l < cfg.layers; ++l) {
    cache.k.push_back(torch::empty({batch, cfg.heads, capacity, cfg.head_dim()}, opts));
    cache.v.push_back(torch::empty({batch, cfg.heads, capacity, cfg.head_dim()}, opts));
  }
  return cache;
}

torch::Tensor GeneratorImpl::decode_prefill(const torch::Tensor& condition, int64_t first_pos, KVCache& cache) {
  const int64_t B = condition.size(0), H = cfg.hidden;
  check(cache.batch() == B && cache.capacity() >= 2, "generator: KV cache does not fit batch ", B);
  const auto P = pos_embed[0], T = target_aware_pos_embed[0], E = timesteps_embeddings[0];
  cache.length = 0;
  auto cond = embeddings(condition);  // [B,H]
  // index 0: cls + P[0]; index 1: class token + P[1] + T[2+τ_1]
  auto h0 = cls_token.view({1, H}) + P[0];
  auto h1 = cond + P[1] + T[2 + first_pos];
  auto h = torch::stack({h0.expand({B, H}), h1}, 1);
  auto c = cond.unsqueeze(1) + E.narrow(0, 0, 2).unsqueeze(0);
  h = run_blocks(h, c, &cache);
  return head(h.narrow(1, 1, 1), c.narrow(1, 1, 1)).select(1, 0).to(torch::kFloat32);
}

torch::Tensor GeneratorImpl::decode_step(const torch::Tensor& token, int64_t t, int64_t pos, int64_t next_pos,
                                         const torch::Tensor& condition, KVCache& cache) {
  // a window of one position
  return decode_window(token.unsqueeze(1), t, {pos}, {next_pos}, condition, cache).select(1, 0);
}

torch::Tensor GeneratorImpl::decode_window(const torch::Tensor& tokens, int64_t t, const std::vector<int64_t>& pos,
                                           const std::vector<int64_t>& next_pos, const torch::Tensor& condition,
                                           KVCache& cache) {
  check(tokens.dim() == 2 && tokens.size(1) >= 1, "generator: decode tokens must be [B,W], got ", tokens.sizes());
  const int64_t W = tokens.size(1);
  check(static_cast<int64_t>(pos.size()) == W && static_cast<int64_t>(next_pos.size()) == W,
        "generator: a decode window of ", W, " tokens needs ", W, " positions and target positions");
  for (int64_t x : next_pos) check(x >= 0, "generator: a decode window needs every target position");
  check(cache.length == t + 1, "generator: decode step ", t, " on a cache holding ", cache.length, " positions");
  check(t + 1 + W <= cache.capacity(), "generator: KV cache capacity ", cache.capacity(), " exceeded");
  const auto P = pos_embed[0], T = target_aware_pos_embed[0], E = timesteps_embeddings[0];
  // rows 2 + positions of the position tables
  auto rows = [&](const std::vector<int64_t>& at) {
    std::vector<int64_t> r(at.size());
    for (size_t j = 0; j < at.size(); ++j) r[j] = 2 + at[j];
    return torch::tensor(r, torch::TensorOptions().dtype(torch::kInt64).device(P.device()));
  };
  // index 1+t+j: x[τ_{t+j}] + P[2+τ_{t+j}] + T[2+τ_{t+j+1}]; condition E[1+t+j]
  auto h = embeddings(tokens) + P.index_select(0, rows(pos)) + T.index_select(0, rows(next_pos));
  auto c = embeddings(condition).unsqueeze(1) + E.narrow(0, 1 + t, W);
  h = run_blocks(h, c, &cache);
  return head(h, c).to(torch::kFloat32);
}

}  // namespace rar::model
