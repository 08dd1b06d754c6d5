// speculative.cpp — see speculative.h.
#include "sampling/speculative.h"

#include <algorithm>
#include <functional>
#include <memory>

#include "sampling/guidance.h"
#include "sampling/logits_chain.h"
#include "sampling/orders.h"
#include "sampling/static_decode.h"
#include "util/error.h"
#include "util/gpu.h"

namespace rar::sampling {

namespace {

// The next token of rows [N,V] of probabilities: argmax(p / e), e ~ Exp(1) — a draw from p (the
// sequential sampler's draw_rows does the same on softmax(logits)). `noise` is e.
torch::Tensor draw_from(const torch::Tensor& p, const torch::Tensor& noise) { return (p / noise).argmax(-1); }

}  // namespace

SpeculativeDecoder::SpeculativeDecoder(model::Generator g, SamplingOptions opts)
    : g_(std::move(g)), opts_(std::move(opts)), kind_(EngineKind::Plain) {
  opts_.validate();
  check(opts_.speculative >= 1, "--speculative must be >= 1 positions per call, got ", opts_.speculative);
  kind_ = parse_engine(opts_.engine, g_->cls_token.device());
  order_ = scan_order(opts_.order, g_->cfg.seq_len);
}

torch::Tensor SpeculativeDecoder::sample(const torch::Tensor& classes, uint64_t seed, SpeculativeStats* stats) {
  return sample_groups(classes, {RowGroup{0, classes.size(0), opts_, seed}}, stats);
}

torch::Tensor SpeculativeDecoder::sample_groups(const torch::Tensor& classes_in, const std::vector<RowGroup>& groups,
                                                SpeculativeStats* stats) {
  torch::NoGradGuard no_grad;
  auto& g = *g_;
  const auto& cfg = g.cfg;
  const auto& order = order_;
  const int64_t window = opts_.speculative;
  const auto device = g.cls_token.device();
  const int64_t B = classes_in.size(0), S = cfg.seq_len, V = cfg.codebook;
  const bool guided = check_batch(cfg, classes_in, groups);
  const int64_t steps = opts_.steps > 0 ? std::min(opts_.steps, S) : S;
  const auto ints = torch::TensorOptions().dtype(torch::kInt64).device(device);
  const auto floats = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  if (B == 0) return torch::zeros({0, S}, ints);

  const auto cond = batch_conditions(g, classes_in, guided);
  const auto class_rows = cond.narrow(0, 0, B);
  const int64_t R = cond.size(0);
  auto both = [&](const torch::Tensor& x) { return guided ? torch::cat({x, x}) : x; };
  const auto rows = row_settings(groups, B, steps, S, V, guided, device);
  // each row's guidance scale at steps 0 .. steps+W-1 ([B, steps+W]; a window's columns past the end repeat the last)
  torch::Tensor scale;
  if (guided) scale = torch::cat({rows.scale, rows.scale.narrow(0, steps - 1, 1).expand({window, B})}).t().contiguous();

  // Random numbers: each group from its own generator, seeded with its seed, the same amount at
  // every call whatever the other rows do — so with rows advancing on their own (static and graph
  // kinds) a group's tokens do not depend on who shares its batch.
  std::vector<at::Generator> gens;
  for (const auto& grp : groups) gens.push_back(make_generator(device, grp.seed));
  auto per_group = [&](torch::Tensor t, const std::function<void(torch::Tensor, at::Generator&)>& fill) {
    for (size_t i = 0; i < groups.size(); ++i) fill(t.narrow(0, groups[i].first, groups[i].n), gens[i]);
    return t;
  };
  auto uniform = [&](int64_t n) {  // [B,n] in [0, 1)
    return per_group(torch::empty({B, n}, floats), [](torch::Tensor x, at::Generator& gen) { x.uniform_(0, 1, gen); });
  };
  auto codes = [&](int64_t n) {  // [B,n] uniform codes
    return per_group(torch::empty({B, n}, ints), [V](torch::Tensor x, at::Generator& gen) { x.random_(0, V, gen); });
  };
  auto draw = [&](const torch::Tensor& p) {  // p [B,n,V] -> [B,n]
    auto e = per_group(torch::empty_like(p), [](torch::Tensor x, at::Generator& gen) { x.exponential_(1, gen); });
    return draw_from(p, e);
  };
  // The sampling distributions [B,n,V] of row b's steps k[b] .. k[b]+n-1 from the model's logits
  // [R,n,V]: the sequential sampler's chain (guidance, temperature, top-k, top-p) as
  // probabilities, one-hot for greedy rows.
  auto distributions = [&](const torch::Tensor& logits, const torch::Tensor& k) {
    const int64_t n = logits.size(1);
    auto l = logits.narrow(0, 0, B).reshape({B * n, V});
    if (guided) {
      auto at = k.unsqueeze(1) + torch::arange(n, ints).unsqueeze(0);  // [B,n]
      auto u = logits.narrow(0, B, B).reshape({B * n, V});
      l = guided_logits(l, u, scale.gather(1, at).reshape({B * n, 1}), rows, n);
    }
    auto hard = [&] { return torch::one_hot(l.argmax(-1), V).to(torch::kFloat32); };
    torch::Tensor p = rows.all_greedy ? hard() : chain_logits(l, rows, n).softmax(-1);
    if (!rows.all_greedy && rows.greedy.defined())
      p = torch::where(rows.greedy.repeat_interleave(n).unsqueeze(1), hard(), p);
    return p.view({B, n, V});
  };

  SpeculativeStats st;
  st.tokens = steps;
  // The calls: on the plain path (every row at the same step: the cache grown and rewound) or with
  // static shapes (W columns at every call, each row at its own step; the graph kind captures the
  // call once per row count and replays it).
  const auto kv = parse_kv_cache(opts_.kv_cache);
  model::KVCache plain_cache;
  Fixed* fixed = nullptr;
  if (kind_ == EngineKind::Plain) {
    plain_cache = g.make_cache(R, S + 1, kv);
  } else {
    auto it = fixed_.find(R);
    const int64_t null_rows = guided ? B : 0;
    const bool reuse =
        it != fixed_.end() && it->second.s.null_rows == null_rows && update_static_decode(g, it->second.s, class_rows);
    if (!reuse) {
      Fixed f;
      f.cache = it != fixed_.end() ? it->second.cache : make_zeroed_cache(g, R, S + window, kv);
      f.s = make_static_decode(g, class_rows, null_rows, order, S + window, int64_t(1) << 30, window);
      fixed_[R] = std::move(f);  // a graph captured on the old buffers is dropped with them
    }
    fixed = &fixed_[R];
  }
  auto& cache = fixed ? fixed->cache : plain_cache;
  // logits [R,W,V] of row b's steps n[b] .. n[b]+W-1, fed = x[τ_n] and the next window-1 drafts [B,window]
  auto call = [&](const torch::Tensor& fed, const torch::Tensor& n) {
    if (!fixed) {
      const int64_t n_plain = n[0].item<int64_t>();  // the plain kind's common step
      const int64_t W = std::min(window, steps - n_plain);
      const std::vector<int64_t> pos(order.begin() + n_plain - 1, order.begin() + n_plain - 1 + W),
          next(order.begin() + n_plain, order.begin() + n_plain + W);
      cache.length = n_plain + 1;  // the kept tokens' slots; a refused draft's slot is overwritten
      st.positions += W;
      auto l = g.decode_window(both(fed.narrow(1, 0, W)), n_plain, pos, next, cond, cache);
      // W columns as the static kinds have them (past the last step: repeats, never kept), so that
      // both draw the same random numbers
      return W == window ? l : torch::cat({l, l.narrow(1, W - 1, 1).expand({R, window - W, V})}, 1);
    }
    st.positions += window;
    fixed->s.window.copy_(both(fed));
    fixed->s.window_step.copy_(both(n.clamp_max(S - 1)));  // a finished row idles at the last step
    if (kind_ == EngineKind::Static) return decode_window_static(g, fixed->s, cache);
    if (!fixed->graph)
      fixed->graph =
          std::make_unique<gpu::StepGraph>([&g, fixed] { return decode_window_static(g, fixed->s, fixed->cache); });
    return fixed->graph->replay();
  };

  auto out = torch::zeros({B, steps + window}, ints);  // in generation order (column k = x[τ_{k+1}]), then padding
  // Step 0 (the prefill) is exact: its token is drawn as the sequential sampler draws.
  auto p0 = distributions(g.decode_prefill(cond, order[0], cache).unsqueeze(1), torch::zeros({B}, ints));
  out.select(1, 0).copy_(draw(p0).select(1, 0));
  st.calls = 1, st.positions = 2;
  auto n = torch::ones({B}, ints);  // each row's tokens so far
  // Drafts for steps 1 .. W, drawn uniformly (q = 1/V).
  auto draft = codes(window);
  auto q = torch::full({B, window, V}, 1.0 / V, floats);
  // Whether every image is done is read back every iteration, except on a GPU with the static or
  // graph kind: every 4th there, so the host queues the next calls while the device runs this one
  // (finished images idle through at most 3 extra calls; the plain kind's common step lives on the
  // host anyway).
  const int64_t check_every = fixed && device.is_cuda() ? 4 : 1;
  for (int64_t it = 0;; ++it) {
    const auto left = (steps - n).clamp_min(0);  // [B]
    if (it % check_every == 0 && left.max().item<int64_t>() == 0) break;
    // One call: x[τ_n] (generated) and the drafts of steps n+1 .. n+W-1 in, p_n .. p_{n+W-1} out.
    auto fed = torch::cat({out.gather(1, (n - 1).unsqueeze(1)), draft.narrow(1, 0, window - 1)}, 1);
    auto p = distributions(call(fed, n), n);  // [B,W,V]
    const int64_t W = p.size(1);
    ++st.calls;

    // The speculative-sampling rule in order: draft d ~ q kept when u < p(d) / q(d), within the
    // positions that count (a row near its end has fewer).
    auto d = draft.narrow(1, 0, W), qw = q.narrow(1, 0, W);
    auto pd = p.gather(2, d.unsqueeze(-1)).squeeze(-1), qd = qw.gather(2, d.unsqueeze(-1)).squeeze(-1);
    const auto j = torch::arange(W, ints).unsqueeze(0);
    const auto counts = j < left.clamp_max(W).unsqueeze(1);
    auto kept = (uniform(W) * qd < pd).logical_and_(counts);
    auto a = kept.to(torch::kInt64).cumprod(1).sum(1);  // leading drafts kept, per row
    // Each row has a + 1 exact tokens (its kept drafts and a draw replacing the first refused one)
    // within what counts; the plain kind keeps the batch's smallest count (one common step).
    auto adv = torch::minimum(a + 1, left.clamp_max(W));
    if (!fixed) adv = adv.min().expand({B});
    auto res = (p - qw).clamp_min(0);
    res = torch::where(res.sum(-1, true) > 0, res, p);  // p = q: nothing refused there
    auto chosen = torch::where(j < a.unsqueeze(1), d, draw(res));
    const auto cols = n.unsqueeze(1) + j;  // [B,W], inside the padded columns
    out.scatter_(1, cols, torch::where(j < adv.unsqueeze(1), chosen, out.gather(1, cols)));

    // The next drafts (steps n+adv ..): from this call's p while it reaches (q = that p), uniform after.
    const auto i = torch::arange(window, ints).unsqueeze(0);
    const auto from = (adv.unsqueeze(1) + i).clamp_max(W - 1);  // [B,window]
    auto pp = p.gather(1, from.unsqueeze(2).expand({B, window, V}));
    const auto use_p = i < (W - adv).unsqueeze(1);
    q = torch::where(use_p.unsqueeze(2), pp, torch::full({}, 1.0 / V, floats));
    draft = torch::where(use_p, draw(pp), codes(window));
    n = n + adv;
  }
  auto raster = torch::zeros({B, S}, ints);
  raster.index_copy_(1, torch::tensor(std::vector<int64_t>(order.begin(), order.begin() + steps), ints),
                     out.narrow(1, 0, steps));
  if (stats) stats->tokens += st.tokens, stats->calls += st.calls, stats->positions += st.positions;
  return raster;
}

}  // namespace rar::sampling
