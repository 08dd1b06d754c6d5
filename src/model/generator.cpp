// generator.cpp — the RAR generator, written to read like SPEC §3: each step of the forward
// pass is one commented statement. The speed work lives elsewhere (model/fused_ops, kernels/, sampling/).
#include "model/generator.h"

#include "model/checkpoint.h"
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

// y = x·Wᵀ + b through ATen's linear. torch::nn::Linear's C++ forward adds the bias as a separate
// broadcast op for 3-D inputs — under autocast a float32 bias added into the bf16 product, which
// was the single most expensive kernel of a training step; at::linear casts the bias with the
// weight and fuses it into the matmul.
torch::Tensor linear(const torch::nn::LinearImpl& l, const torch::Tensor& x) { return at::linear(x, l.weight, l.bias); }

}  // namespace

// ---------------------------------------------------------------- attention

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads_, double attn_drop_, double proj_drop_)
    : heads(heads_), attn_drop(attn_drop_) {
  qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  q_norm = register_module("q_norm", layer_norm(dim / heads));
  k_norm = register_module("k_norm", layer_norm(dim / heads));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
  proj_drop = register_module("proj_drop", torch::nn::Dropout(proj_drop_));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, torch::Tensor* k_cache, torch::Tensor* v_cache,
                                     int64_t past) {
  const int64_t B = x.size(0), N = x.size(1), H = x.size(2);
  // qkv projection, q/k LayerNorm per head (model/fused_ops)
  auto [q, k, v] = qk_norm_split(linear(*qkv, x), heads, q_norm, k_norm);
  bool causal = true;
  if (k_cache) {
    // Append this step's keys/values, then attend over everything cached so far
    //   (a cache may hold another dtype than the model, fp8: model/fused_ops to_cache_dtype)
    k_cache->index({Slice(), Slice(), Slice(past, past + N)}).copy_(to_cache_dtype(k, k_cache->scalar_type()));
    v_cache->index({Slice(), Slice(), Slice(past, past + N)}).copy_(to_cache_dtype(v, v_cache->scalar_type()));
    k = k_cache->index({Slice(), Slice(), Slice(0, past + N)}).to(q.scalar_type());
    v = v_cache->index({Slice(), Slice(), Slice(0, past + N)}).to(q.scalar_type());
    // One new query sees every cached key; several new queries (prefill) need the causal mask,
    // which is aligned to the top-left, so it is only right when nothing was cached before.
    causal = N > 1;
    check(!causal || past == 0, "attention: several new positions on a non-empty KV cache");
  }
  // softmax(q·kᵀ/√hd + causal mask)·v
  auto o = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, is_training() ? attn_drop : 0.0, causal);
  o = o.transpose(1, 2).reshape({B, N, H});
  return proj_drop(linear(*proj, o));
}

torch::Tensor AttentionImpl::forward_slot(const torch::Tensor& x, torch::Tensor& k_cache, torch::Tensor& v_cache,
                                          const torch::Tensor& slot, const torch::Tensor& valid) {
  // q/k LayerNorm per head; this position's key/value into its slot of the cache; then
  // softmax(q·kᵀ/√hd over the valid slots)·v
  //   (model/fused_ops: on CUDA one kernel for both that reads only the filled slots)
  return linear(*proj, qk_norm_decode_attention(linear(*qkv, x), heads, q_norm, k_norm, k_cache, v_cache, slot, valid));
}

// ---------------------------------------------------------------- MLP

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, double p) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
  drop = register_module("drop", torch::nn::Dropout(p));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  // fc1 -> exact GELU -> dropout -> fc2 (one op keeping only fc1's output and the mask) -> dropout
  return drop(gelu_dropout_linear(linear(*fc1, x), *fc2, drop->options.p(), is_training()));
}

// ---------------------------------------------------------------- block

BlockImpl::BlockImpl(const GeneratorConfig& cfg) {
  norm1 = register_module("norm1", layer_norm(cfg.hidden));
  attn = register_module("attn", Attention(cfg.hidden, cfg.heads, cfg.attn_dropout, cfg.dropout));
  norm2 = register_module("norm2", layer_norm(cfg.hidden));
  mlp = register_module("mlp", Mlp(cfg.hidden, cfg.mlp, cfg.dropout));
  adaLN_modulation = register_module(
      "adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(cfg.hidden, 6 * cfg.hidden)));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& silu_c, torch::Tensor* k_cache,
                                 torch::Tensor* v_cache, int64_t past) {
  // (shift_a, scale_a, gate_a, shift_m, scale_m, gate_m) = split6(W·SiLU(c) + b); SiLU(c) is
  // computed once for all blocks by the caller (adaLN_modulation[0] is that SiLU).
  // (model/fused_ops: in training, two matmuls so that the shifts are not kept for backward)
  auto m = adaln_split6(*adaLN_modulation[1]->as<torch::nn::Linear>(), silu_c, is_training());
  return modulated(x_in, m, [&](const torch::Tensor& a) { return attn(a, k_cache, v_cache, past); });
}

torch::Tensor BlockImpl::modulated(const torch::Tensor& x_in, const std::array<torch::Tensor, 6>& m,
                                   const std::function<torch::Tensor(const torch::Tensor&)>& attend) {
  const Residual h = modulated(Residual{x_in, {}, {}}, m, attend);
  return gated_residual(h.x, h.gate, h.y);
}

Residual BlockImpl::modulated(const Residual& h_in, const std::array<torch::Tensor, 6>& m,
                              const std::function<torch::Tensor(const torch::Tensor&)>& attend) {
  // h += gate_a * Attn(LN1(h) * (1 + scale_a) + shift_a)
  //   (ln_modulate and gated_residual: model/fused_ops, one CUDA kernel each on the fast path; in
  //   inference a pending residual add is done in LN1's pass, and this residual add in LN2's)
  torch::Tensor x_in = h_in.x, a;
  if (h_in.gate.defined()) {
    auto xa = gated_residual_ln_modulate(h_in.x, h_in.gate, h_in.y, norm1, m[0], m[1], !is_training());
    x_in = xa[0], a = xa[1];
  } else {
    a = ln_modulate(norm1, x_in, m[0], m[1]);
  }
  auto [x, z] = gated_residual_ln_modulate(x_in, m[2], attend(a), norm2, m[3], m[4], !is_training());
  // h += gate_m * MLP(LN2(h) * (1 + scale_m) + shift_m), z = LN2(h) * (1 + scale_m) + shift_m
  return {x, m[5], mlp(z)};
}

// ---------------------------------------------------------------- final layer

FinalLayerImpl::FinalLayerImpl(int64_t dim) {
  norm_final = register_module("norm_final", layer_norm(dim, /*affine=*/false));
  adaLN_modulation =
      register_module("adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(dim, 2 * dim)));
}

torch::Tensor FinalLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& silu_c) {
  return modulated(x, linear(*adaLN_modulation[1]->as<torch::nn::Linear>(), silu_c));
}

torch::Tensor FinalLayerImpl::modulated(const torch::Tensor& x, const torch::Tensor& m_in) {
  return modulated(Residual{x, {}, {}}, m_in);
}

torch::Tensor FinalLayerImpl::modulated(const Residual& h, const torch::Tensor& m_in) {
  // (scale, shift) = split2(W·SiLU(c) + b) — scale first here
  auto m = m_in.chunk(2, -1);
  if (!h.gate.defined()) return ln_modulate(norm_final, h.x, m[1], m[0]);
  return gated_residual_ln_modulate(h.x, h.gate, h.y, norm_final, m[1], m[0], !is_training())[1];
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
  // takes its own use of it so its gradients add up in float32 (model/fused_ops shared_cast).
  const auto silu = F::silu(c);
  const auto silu_lp = to_compute(silu.detach());
  for (size_t l = 0; l < block_list.size(); ++l) {
    const auto silu_c = shared_cast(silu, silu_lp);
    if (cache) h = block_list[l](h, silu_c, &cache->k[l], &cache->v[l], past);
    else if (static_cast<int64_t>(l) < checkpoint_layers && is_training() && torch::GradMode::is_enabled())
      h = checkpointed_block(block_list[l], h, silu_c);
    else h = block_list[l](h, silu_c);
  }
  if (cache) cache->length += h.size(1);
  return h;
}

torch::Tensor GeneratorImpl::head(const torch::Tensor& h, const torch::Tensor& c) {
  // h = LN_noaffine(h) * (1 + scale) + shift; logits = lm_head(h)
  return linear(*lm_head, adaln_before_head(h, to_compute(F::silu(c))));
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
  check(cache.length == t + 1, "generator: decode step ", t, " on a cache holding ", cache.length, " positions");
  check(t + 2 <= cache.capacity(), "generator: KV cache capacity ", cache.capacity(), " exceeded");
  const auto P = pos_embed[0], T = target_aware_pos_embed[0], E = timesteps_embeddings[0];
  // index 1+t: x[τ_t] + P[2+τ_t] + T[2+τ_{t+1}]; condition E[1+t]
  auto h = embeddings(token) + P[2 + pos];
  if (next_pos >= 0) h = h + T[2 + next_pos];
  auto c = embeddings(condition) + E[1 + t];
  h = run_blocks(h.unsqueeze(1), c.unsqueeze(1), &cache);
  return head(h, c.unsqueeze(1)).select(1, 0).to(torch::kFloat32);
}

// ---------------------------------------------------------------- static-shape decoding

KVCache GeneratorImpl::make_zeroed_cache(int64_t batch, int64_t capacity, std::optional<at::ScalarType> dtype) const {
  auto cache = make_cache(batch, capacity, dtype);
  for (auto* ts : {&cache.k, &cache.v})
    for (auto& t : *ts) t.view(torch::kUInt8).zero_();  // all-zero bytes are 0 in every float dtype
  return cache;
}

GeneratorImpl::AdaTables GeneratorImpl::ada_tables(const torch::Tensor& class_conditions, int64_t null_rows,
                                                   int64_t table_bytes) {
  torch::NoGradGuard no_grad;
  const int64_t S = cfg.seq_len, J = S + 2, H = cfg.hidden;
  const auto dev = cls_token.device();
  const auto i64 = torch::TensorOptions(torch::kInt64).device(dev);
  // The distinct conditions (the null class last when there are null rows) and each row's index.
  auto [distinct, inverse] = at::_unique(class_conditions.cpu(), /*sorted=*/true, /*return_inverse=*/true);
  const int64_t per_condition = J * (6 * H * cfg.layers + 2 * H) * cls_token.element_size();
  const bool all = (distinct.size(0) + (null_rows > 0)) * per_condition <= table_bytes;
  AdaTables t;
  std::vector<torch::Tensor> conds, rows;
  if (all) {
    conds.push_back(distinct);
    rows.push_back(inverse);
  }
  if (null_rows > 0) {
    const int64_t u = all ? distinct.size(0) : 0;
    conds.push_back(torch::full({1}, cfg.null_class_token(), torch::kInt64));
    rows.push_back(torch::full({null_rows}, u, torch::kInt64));
  }
  if (conds.empty()) return t;
  auto ids = torch::cat(conds).to(dev);
  t.rows = (torch::cat(rows) * J).to(i64);
  // SiLU(emb(c) + E[j]) for every condition and position, through each block's adaLN and the head's
  auto silu_c = F::silu((embeddings(ids).unsqueeze(1) + timesteps_embeddings[0].narrow(0, 0, J).unsqueeze(0)).reshape({-1, H}));
  for (auto& b : block_list) t.block.push_back(linear(*b->adaLN_modulation[1]->as<torch::nn::Linear>(), silu_c));
  t.head = linear(*adaln_before_head->adaLN_modulation[1]->as<torch::nn::Linear>(), silu_c);
  return t;
}

StaticDecode GeneratorImpl::make_static_decode(const torch::Tensor& condition, int64_t null_rows,
                                               const std::vector<int64_t>& order, int64_t capacity,
                                               int64_t table_bytes) {
  torch::NoGradGuard no_grad;
  const int64_t S = cfg.seq_len;
  check(static_cast<int64_t>(order.size()) == S, "static decode: order has ", order.size(), " positions, want ", S);
  check(capacity >= S + 1, "static decode: capacity ", capacity, " < ", S + 1);
  const auto P = pos_embed[0], T = target_aware_pos_embed[0];
  const auto dev = cls_token.device();
  const auto i64 = torch::TensorOptions(torch::kInt64).device(dev);
  StaticDecode s;
  s.condition = condition.to(i64);
  s.null_rows = null_rows;
  s.token = torch::zeros({s.condition.size(0) + null_rows}, i64);
  s.step = torch::ones({1}, i64);
  s.slots = torch::arange(capacity, i64);
  // row t (1..S-1) = P[2+τ_{t-1}] + T[2+τ_t]
  auto tau = torch::tensor(order, torch::kInt64).to(dev);
  auto prev = torch::cat({tau.narrow(0, 0, 1), tau.narrow(0, 0, S - 1)});  // row 0: unused
  s.position = P.index_select(0, prev + 2) + T.index_select(0, tau + 2);
  auto t = ada_tables(s.condition, null_rows, table_bytes);
  s.table_block = std::move(t.block);
  s.table_head = t.head;
  s.table_rows = t.rows;
  return s;
}

bool GeneratorImpl::update_static_decode(StaticDecode& s, const torch::Tensor& condition, int64_t table_bytes) {
  torch::NoGradGuard no_grad;
  if (condition.size(0) != s.condition.size(0)) return false;
  auto t = ada_tables(condition.to(s.condition.device()), s.null_rows, table_bytes);
  const bool same = t.rows.defined() == s.table_rows.defined() &&
                    (!t.rows.defined() || (t.rows.sizes() == s.table_rows.sizes() &&
                                           t.head.sizes() == s.table_head.sizes()));
  if (!same) return false;
  s.condition.copy_(condition);
  if (t.rows.defined()) {
    s.table_rows.copy_(t.rows);
    s.table_head.copy_(t.head);
    for (size_t l = 0; l < t.block.size(); ++l) s.table_block[l].copy_(t.block[l]);
  }
  return true;
}

torch::Tensor GeneratorImpl::decode_step_static(const StaticDecode& s, KVCache& cache) {
  const auto E = timesteps_embeddings[0];
  const auto slot = s.step + 1;  // the fed token's index in the sequence
  const int64_t R = s.token.size(0), served = s.table_rows.defined() ? s.table_rows.size(0) : 0;
  // index 1+t: x[τ_{t-1}] + P[2+τ_{t-1}] + T[2+τ_t]; condition E[1+t]
  auto h = (embeddings(s.token) + s.position.index_select(0, s.step)).unsqueeze(1);  // [R,1,H]
  // adaLN products: rows the tables serve gather theirs (table row u*(S+2) + 1+t); the others
  // (class rows beyond the table budget) run the matmul on SiLU(emb(c) + E[1+t]).
  torch::Tensor silu_c, table_index;
  if (served < R)
    silu_c = to_compute(F::silu(embeddings(s.condition.narrow(0, 0, R - served)) + E.index_select(0, slot)));
  if (served > 0) table_index = s.table_rows + slot;
  // Both kinds of rows write into one [R,1,n] product (no concatenation afterwards), in the tables' dtype.
  if (served > 0 && served < R) silu_c = silu_c.to(s.table_head.scalar_type());
  auto adaln = [&](const torch::nn::LinearImpl& lin, const torch::Tensor& table) {
    const int64_t n = lin.weight.size(0);
    if (served == 0) return linear(lin, silu_c.unsqueeze(1));
    if (served == R) return table.index_select(0, table_index).unsqueeze(1);
    auto out = torch::empty({R, n}, table.options());
    auto class_rows = out.narrow(0, 0, R - served), table_rows = out.narrow(0, R - served, served);
    at::addmm_out(class_rows, lin.bias.to(table.scalar_type()), silu_c, lin.weight.to(table.scalar_type()).t());
    at::index_select_out(table_rows, table, 0, table_index);
    return out.unsqueeze(1);
  };
  auto valid = s.slots.le(slot).view({1, 1, 1, -1});
  // each block's MLP residual is added by the next block's LN1 (the last one's by the head's LN)
  Residual r{h, {}, {}};
  for (size_t l = 0; l < block_list.size(); ++l) {
    auto& b = block_list[l];
    auto m = adaln(*b->adaLN_modulation[1]->as<torch::nn::Linear>(), served ? s.table_block[l] : torch::Tensor())
                 .chunk(6, -1);
    r = b->modulated(r, {m[0], m[1], m[2], m[3], m[4], m[5]}, [&](const torch::Tensor& a) {
      return b->attn->forward_slot(a, cache.k[l], cache.v[l], slot, valid);
    });
  }
  auto mh = adaln(*adaln_before_head->adaLN_modulation[1]->as<torch::nn::Linear>(), s.table_head);
  return linear(*lm_head, adaln_before_head->modulated(r, mh)).select(1, 0).to(torch::kFloat32);
}

}  // namespace rar::model
