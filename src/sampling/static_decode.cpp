// static_decode.cpp — see static_decode.h.
#include "sampling/static_decode.h"

#include <functional>
#include <limits>

#include "model/ops/block_ops.h"
#include "model/ops/decode_ops.h"
#include "util/error.h"

namespace rar::sampling {

namespace F = torch::nn::functional;
using model::KVCache;

namespace {

torch::Tensor linear(const torch::nn::LinearImpl& l, const torch::Tensor& x) { return at::linear(x, l.weight, l.bias); }

// The residual stream h = x + gate·y with the add still to do (gate undefined: h = x). Each
// block's MLP residual is handed on to the next block's LN1 (or the head's LayerNorm), which forms
// it in the same pass as its modulation (model/ops gated_residual_ln_modulate).
struct Residual {
  torch::Tensor x, gate, y;
};

// The attention of a block up to its output projection: the modulated LN1 output a [R,N,H] in,
// softmax(q·kᵀ/√hd)·v over the cache [R,N,H] out (this call's keys and values appended).
using Attend = std::function<torch::Tensor(model::AttentionImpl&, const torch::Tensor& a)>;

// A block at the new positions of each row (one for a step, W for a window), from and to a residual
// stream whose last add is pending: the block's two residual lines (model/generator
// BlockImpl::forward) with the adds fused into the next LayerNorm, and `attend` over the cache.
Residual block_step(model::BlockImpl& b, const Residual& h, const std::array<torch::Tensor, 6>& m, const Attend& attend) {
  // h += gate_a · Attn(LN1(h)·(1 + scale_a) + shift_a)   (the pending add done in LN1's pass)
  torch::Tensor x = h.x, a;
  if (h.gate.defined()) {
    auto xa = model::gated_residual_ln_modulate(h.x, h.gate, h.y, b.norm1, m[0], m[1], !b.is_training(), b.path);
    x = xa[0], a = xa[1];
  } else {
    a = model::ln_modulate(b.norm1, x, m[0], m[1], b.path);
  }
  auto& attn = *b.attn;
  auto o = linear(*attn.proj, attend(attn, a));
  // h += gate_m · MLP(LN2(h)·(1 + scale_m) + shift_m)     (this add done in LN2's pass; the MLP's left pending)
  auto [x2, z] = model::gated_residual_ln_modulate(x, m[2], o, b.norm2, m[3], m[4], !b.is_training(), b.path);
  // the MLP; in inference (no dropout) fc2(GELU(fc1(z)))
  if (b.is_training()) return {x2, m[5], b.mlp(z)};
  return {x2, m[5], linear(*b.mlp->fc2, at::gelu(linear(*b.mlp->fc1, z)))};
}

// The adaLN head's modulated LayerNorm on a pending residual stream: (scale, shift) = split2(m).
torch::Tensor head_step(model::FinalLayerImpl& f, const Residual& h, const torch::Tensor& m_in) {
  auto m = m_in.chunk(2, -1);
  if (!h.gate.defined()) return model::ln_modulate(f.norm_final, h.x, m[1], m[0], f.path);
  return model::gated_residual_ln_modulate(h.x, h.gate, h.y, f.norm_final, m[1], m[0], !f.is_training(), f.path)[1];
}

// x [R,h,W,hd] into the cache [R,h,capacity,hd] at row r's slots slot[r] ([R,W]), in the cache's
// dtype: one scatter along the slot axis (as model/ops append_to_cache copies one slot).
void write_slots(torch::Tensor& cache, const torch::Tensor& slot, const torch::Tensor& x) {
  const auto c = model::to_cache_dtype(x, cache.scalar_type());
  // cache[r, h, slot[r,j], :] = x[r, h, j, :]
  const auto index = slot.view({slot.size(0), 1, slot.size(1), 1}).expand(x.sizes());
  if (cache.scalar_type() == torch::kFloat8_e4m3fn)  // scatter_ has no fp8 kernels: scatter the bytes
    cache.view(torch::kUInt8).scatter_(2, index, c.view(torch::kUInt8));
  else
    cache.scatter_(2, index, c);
}

// The adaLN tables of StaticDecode for these conditions.
struct AdaTables {
  std::vector<torch::Tensor> block;
  torch::Tensor head, rows;
};

AdaTables ada_tables(model::GeneratorImpl& g, const torch::Tensor& class_conditions, int64_t null_rows, int64_t table_bytes) {
  torch::NoGradGuard no_grad;
  const int64_t S = g.cfg.seq_len, J = S + 2, H = g.cfg.hidden;
  const auto dev = g.cls_token.device();
  const auto i64 = torch::TensorOptions(torch::kInt64).device(dev);
  // The distinct conditions (the null class last when there are null rows) and each row's index.
  auto [distinct, inverse] = at::_unique(class_conditions.cpu(), /*sorted=*/true, /*return_inverse=*/true);
  const int64_t per_condition = J * (6 * H * g.cfg.layers + 2 * H) * g.cls_token.element_size();
  const bool all = (distinct.size(0) + (null_rows > 0)) * per_condition <= table_bytes;
  AdaTables t;
  std::vector<torch::Tensor> conds, rows;
  if (all) {
    conds.push_back(distinct);
    rows.push_back(inverse);
  }
  if (null_rows > 0) {
    const int64_t u = all ? distinct.size(0) : 0;
    conds.push_back(torch::full({1}, g.cfg.null_class_token(), torch::kInt64));
    rows.push_back(torch::full({null_rows}, u, torch::kInt64));
  }
  if (conds.empty()) return t;
  auto ids = torch::cat(conds).to(dev);
  t.rows = (torch::cat(rows) * J).to(i64);
  // SiLU(emb(c) + E[j]) for every condition and position, through each block's adaLN and the head's
  auto silu_c = F::silu((g.embeddings(ids).unsqueeze(1) + g.timesteps_embeddings[0].narrow(0, 0, J).unsqueeze(0)).reshape({-1, H}));
  for (auto& b : g.block_list) t.block.push_back(linear(*b->adaLN_modulation[1]->as<torch::nn::Linear>(), silu_c));
  t.head = linear(*g.adaln_before_head->adaLN_modulation[1]->as<torch::nn::Linear>(), silu_c);
  return t;
}

}  // namespace

model::KVCache make_zeroed_cache(const model::GeneratorImpl& g, int64_t batch, int64_t capacity,
                                 std::optional<at::ScalarType> dtype) {
  auto cache = g.make_cache(batch, capacity, dtype);
  for (auto* ts : {&cache.k, &cache.v})
    for (auto& t : *ts) t.view(torch::kUInt8).zero_();  // all-zero bytes are 0 in every float dtype
  return cache;
}

StaticDecode make_static_decode(model::GeneratorImpl& g, const torch::Tensor& condition, int64_t null_rows,
                                const std::vector<int64_t>& order, int64_t capacity, int64_t table_bytes,
                                int64_t window) {
  torch::NoGradGuard no_grad;
  const int64_t S = g.cfg.seq_len;
  check(static_cast<int64_t>(order.size()) == S, "static decode: order has ", order.size(), " positions, want ", S);
  check(capacity >= S + 1 + std::max<int64_t>(window - 1, 0), "static decode: capacity ", capacity, " < ",
        S + 1 + std::max<int64_t>(window - 1, 0));
  const auto P = g.pos_embed[0], T = g.target_aware_pos_embed[0];
  const auto dev = g.cls_token.device();
  const auto i64 = torch::TensorOptions(torch::kInt64).device(dev);
  StaticDecode s;
  s.condition = condition.to(i64);
  s.null_rows = null_rows;
  s.token = torch::zeros({s.condition.size(0) + null_rows}, i64);
  s.step = torch::ones({1}, i64);
  s.slots = torch::arange(capacity, i64);
  // row t (1..S-1) = P[2+τ_t] + T[2+τ_{t+1}], with τ_t = order[t-1]
  auto tau = torch::tensor(order, torch::kInt64).to(dev);
  auto prev = torch::cat({tau.narrow(0, 0, 1), tau.narrow(0, 0, S - 1)});  // row 0: unused
  s.position = P.index_select(0, prev + 2) + T.index_select(0, tau + 2);
  if (window > 0) {  // a window's columns past step S-1 read zero rows
    s.position = torch::cat({s.position, torch::zeros({window, s.position.size(1)}, s.position.options())});
    s.window = torch::zeros({s.token.size(0), window}, i64);
    s.window_step = torch::ones({s.token.size(0)}, i64);
  }
  auto t = ada_tables(g, s.condition, null_rows, table_bytes);
  s.table_block = std::move(t.block);
  s.table_head = t.head;
  s.table_rows = t.rows;
  return s;
}

bool update_static_decode(model::GeneratorImpl& g, StaticDecode& s, const torch::Tensor& condition, int64_t table_bytes) {
  torch::NoGradGuard no_grad;
  if (condition.size(0) != s.condition.size(0)) return false;
  auto t = ada_tables(g, condition.to(s.condition.device()), s.null_rows, table_bytes);
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

namespace {

// The adaLN products W·SiLU(c + E[i]) + b of a call's new positions, i = the sequence index
// `at` [R,W] of each (or [1,1]: every row at the same index, a step): rows the tables serve (the
// last `served`) gather their table rows u*(S+2) + i; the others (class rows beyond the table
// budget) run the matmul. One helper for the step and the window, so both read the same rows.
struct AdaRows {
  int64_t R = 0, W = 0, served = 0;
  torch::Tensor silu_c;       // [R - served, W or 1, H]: SiLU(emb(c) + E[i]) of the class rows
  torch::Tensor table_index;  // [served·W] table rows
  AdaRows(model::GeneratorImpl& g, const StaticDecode& s, const torch::Tensor& at, int64_t rows, int64_t width)
      : R(rows), W(width), served(s.table_rows.defined() ? s.table_rows.size(0) : 0) {
    const auto E = g.timesteps_embeddings[0];
    const int64_t H = g.cfg.hidden, classes = R - served;
    if (classes > 0) {
      const auto i = at.size(0) == 1 ? at : at.narrow(0, 0, classes);
      silu_c = model::to_compute(F::silu(g.embeddings(s.condition.narrow(0, 0, classes)).unsqueeze(1) +
                                         E.index_select(0, i.reshape(-1)).view({i.size(0), i.size(1), H})));
      // both kinds of rows write into one product, in the tables' dtype
      if (served > 0) silu_c = silu_c.to(s.table_head.scalar_type());
    }
    if (served > 0)
      table_index = (s.table_rows.unsqueeze(1) + (at.size(0) == 1 ? at : at.narrow(0, classes, served))).reshape(-1);
  }
  // [R,W,n] for the linear `lin` of the adaLN (its table `table` when the tables serve rows)
  torch::Tensor operator()(const torch::nn::LinearImpl& lin, const torch::Tensor& table) const {
    if (served == 0) return linear(lin, silu_c);
    if (served == R) return table.index_select(0, table_index).view({R, W, -1});
    const int64_t n = lin.weight.size(0), classes = R - served;
    auto out = torch::empty({R, W, n}, table.options());
    auto class_rows = out.narrow(0, 0, classes).view({-1, n}), table_rows = out.narrow(0, classes, served).view({-1, n});
    at::addmm_out(class_rows, lin.bias.to(table.scalar_type()), silu_c.reshape({-1, silu_c.size(-1)}),
                  lin.weight.to(table.scalar_type()).t());
    at::index_select_out(table_rows, table, 0, table_index);
    return out;
  }
};

// The blocks and the head over the new positions h [R,W,H] (the embedded tokens): each block's
// adaLN rows from `ada`, its attention from `attend(l, attn, a)` (which writes the cache), the
// residual adds fused into the next LayerNorm. Logits [R,W,V] float32.
using AttendLayer = std::function<torch::Tensor(size_t l, model::AttentionImpl&, const torch::Tensor& a)>;
torch::Tensor blocks_and_head(model::GeneratorImpl& g, const StaticDecode& s, const torch::Tensor& h,
                              const AdaRows& ada, const AttendLayer& attend) {
  Residual r{h, {}, {}};
  for (size_t l = 0; l < g.block_list.size(); ++l) {
    auto& b = *g.block_list[l];
    const auto m = ada(*b.adaLN_modulation[1]->as<torch::nn::Linear>(), ada.served ? s.table_block[l] : torch::Tensor())
                       .chunk(6, -1);
    r = block_step(b, r, {m[0], m[1], m[2], m[3], m[4], m[5]},
                   [&](model::AttentionImpl& attn, const torch::Tensor& a) { return attend(l, attn, a); });
  }
  const auto mh = ada(*g.adaln_before_head->adaLN_modulation[1]->as<torch::nn::Linear>(), s.table_head);
  return linear(*g.lm_head, head_step(*g.adaln_before_head, r, mh)).to(torch::kFloat32);
}

}  // namespace

torch::Tensor decode_step_static(model::GeneratorImpl& g, const StaticDecode& s, model::KVCache& cache) {
  const auto slot = s.step + 1;  // the fed token's index in the sequence (all rows at one step)
  const int64_t R = s.token.size(0);
  // index 1+t: x[τ_t] + P[2+τ_t] + T[2+τ_{t+1}]; condition E[1+t]
  auto h = (g.embeddings(s.token) + s.position.index_select(0, s.step)).unsqueeze(1);  // [R,1,H]
  const AdaRows ada(g, s, slot.view({1, 1}), R, 1);
  const auto valid = s.slots.le(slot).view({1, 1, 1, -1});
  // one position per row over the cache slots (`slot`: this position's, `valid`: the filled ones)
  auto attend = [&](size_t l, model::AttentionImpl& attn, const torch::Tensor& a) {
    return model::qk_norm_decode_attention(linear(*attn.qkv, a), attn.heads, attn.q_norm, attn.k_norm, cache.k[l],
                                           cache.v[l], slot, valid, attn.path, s.attention);
  };
  return blocks_and_head(g, s, h, ada, attend).select(1, 0);
}

torch::Tensor decode_window_static(model::GeneratorImpl& g, const StaticDecode& s, model::KVCache& cache) {
  check(s.window.defined() && s.window_step.defined(), "static decode: made without a window");
  const int64_t R = s.window.size(0), W = s.window.size(1), S = g.cfg.seq_len, H = g.cfg.hidden;
  check(cache.capacity() >= S + W, "static decode: a window of ", W, " needs ", S + W, " cache slots");
  const auto steps = s.window_step.unsqueeze(1) + s.slots.narrow(0, 0, W).unsqueeze(0);  // [R,W]: t .. t+W-1
  const auto slot = steps + 1;  // the fed tokens' indices in the sequence
  // index 1+t+j: x[τ_{t+j}] + P[2+τ_{t+j}] + T[2+τ_{t+j+1}]; condition E[1+t+j] (clamped past the last step)
  auto h = g.embeddings(s.window) + s.position.index_select(0, steps.reshape(-1)).view({R, W, H});
  const AdaRows ada(g, s, slot.clamp_max(S + 1), R, W);
  const auto mask = (s.slots.view({1, 1, -1}) <= slot.unsqueeze(2)).unsqueeze(1);  // [R,1,W,capacity]
  // SDPA turns a boolean mask into an additive one (0 where kept, -inf elsewhere) at every call:
  // three kernels per block; made once here, the same way, in the attention's dtype (at block 0)
  torch::Tensor additive;
  // the window's keys/values written at their slots; position j attends to slots 0 .. t+1+j
  auto attend = [&](size_t l, model::AttentionImpl& attn, const torch::Tensor& a) {
    auto [q, k, v] = model::qk_norm_split(linear(*attn.qkv, a), attn.heads, attn.q_norm, attn.k_norm, attn.path);
    write_slots(cache.k[l], slot, k);
    write_slots(cache.v[l], slot, v);
    if (!additive.defined())
      additive = at::where(mask, at::scalar_tensor(0.0, q.options()), -std::numeric_limits<double>::infinity());
    auto o = at::scaled_dot_product_attention(q, cache.k[l].to(q.scalar_type()), cache.v[l].to(q.scalar_type()),
                                              additive);
    return o.transpose(1, 2).reshape({R, W, H});
  };
  return blocks_and_head(g, s, h, ada, attend);
}

}  // namespace rar::sampling
