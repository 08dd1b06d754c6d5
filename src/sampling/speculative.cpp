// speculative.cpp — see speculative.h.
#include "sampling/speculative.h"

#include <algorithm>
#include <memory>

#include "sampling/guidance.h"
#include "sampling/logits_chain.h"
#include "sampling/orders.h"
#include "sampling/static_decode.h"
#include "util/error.h"
#include "util/gpu.h"

namespace rar::sampling {

namespace {

// The sampling distribution at steps k0 .. k0+n-1 from the model's logits [R,n,V] (a guided
// batch's class rows, then its null rows): guidance at each step's scale, then temperature,
// top-k and top-p — the sequential sampler's chain — as probabilities [B,n,V] float32 (one-hot
// for greedy top-k 1).
torch::Tensor distributions(const torch::Tensor& logits, int64_t B, int64_t k0, int64_t S, const SamplingOptions& o) {
  const int64_t n = logits.size(1), V = logits.size(2);
  auto l = logits.narrow(0, 0, B);
  if (o.cfg != 0.0) {
    std::vector<float> g(n);
    for (int64_t j = 0; j < n; ++j) g[j] = guidance_scale_at(k0 + j, S, o.cfg, o.cfg_power, o.schedule);
    auto scale = torch::tensor(g, logits.options()).view({1, n, 1});
    l = apply_guidance(l, logits.narrow(0, B, B), scale);
  }
  l = l.reshape({B * n, V});
  if (o.top_k == 1) return torch::one_hot(l.argmax(-1), V).to(torch::kFloat32).view({B, n, V});
  l = apply_top_p(apply_top_k(apply_temperature(l, o.temperature), o.top_k), o.top_p);
  return l.softmax(-1).view({B, n, V});
}

// One token per row of probabilities p [N,V]: argmax(p / e), e ~ Exp(1) — a draw from p (the
// sequential sampler's draw_rows does the same on softmax(logits)).
torch::Tensor draw_from(const torch::Tensor& p, at::Generator& gen) {
  return (p / torch::empty_like(p).exponential_(1, gen)).argmax(-1);
}

}  // namespace

SpeculativeDecoder::SpeculativeDecoder(model::Generator g, SamplingOptions opts)
    : g_(std::move(g)), opts_(std::move(opts)), kind_(EngineKind::Plain) {
  opts_.validate();
  check(opts_.speculative >= 1, "--speculative must be >= 1 positions per call, got ", opts_.speculative);
  kind_ = parse_engine(opts_.engine, g_->cls_token.device());
  order_ = scan_order(opts_.order, g_->cfg.seq_len);
}

torch::Tensor SpeculativeDecoder::sample(const torch::Tensor& classes_in, uint64_t seed, SpeculativeStats* stats) {
  torch::NoGradGuard no_grad;
  auto& g = *g_;
  const auto& opts = opts_;
  const auto& order = order_;
  const int64_t window = opts.speculative;
  const auto& cfg = g.cfg;
  const auto device = g.cls_token.device();
  const int64_t B = classes_in.size(0), S = cfg.seq_len, V = cfg.codebook;
  check(classes_in.numel() == 0 ||
            (classes_in.min().item<int64_t>() >= 0 && classes_in.max().item<int64_t>() < cfg.classes),
        "class ids must lie in [0, ", cfg.classes, ")");
  const int64_t steps = opts.steps > 0 ? std::min(opts.steps, S) : S;
  const bool guided = opts.cfg != 0.0;
  const auto ints = torch::TensorOptions().dtype(torch::kInt64).device(device);
  const auto floats = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  auto raster = torch::zeros({B, S}, ints);
  if (B == 0) return raster;

  const auto class_rows = g.condition_tokens(classes_in.to(device, torch::kInt64));
  auto cond = guided ? torch::cat({class_rows, torch::full_like(class_rows, cfg.null_class_token())}) : class_rows;
  const int64_t R = cond.size(0);
  auto both = [&](const torch::Tensor& x) { return guided ? torch::cat({x, x}) : x; };
  // The calls: on the plain path (the cache grown and rewound) or with static shapes (every call
  // the same W columns; the graph kind captures the call once per row count and replays it).
  const auto kv = parse_kv_cache(opts.kv_cache);
  model::KVCache plain_cache;
  Fixed* fixed = nullptr;
  if (kind_ == EngineKind::Plain) {
    plain_cache = g.make_cache(R, S + 1, kv);
  } else {
    auto it = fixed_.find(R);
    if (it == fixed_.end() || !update_static_decode(g, it->second.s, class_rows)) {
      Fixed f;
      f.cache = it != fixed_.end() ? it->second.cache : make_zeroed_cache(g, R, S + window, kv);
      f.s = make_static_decode(g, class_rows, guided ? B : 0, order, S + window, int64_t(1) << 30, window);
      fixed_[R] = std::move(f);  // a graph captured on the old buffers is dropped with them
    }
    fixed = &fixed_[R];
  }
  auto& cache = fixed ? fixed->cache : plain_cache;
  // logits [R,W,V] of steps n .. n+W-1, fed = x[τ_n] and the next window-1 drafts [B,window]
  auto call = [&](const torch::Tensor& fed, int64_t n, int64_t W) {
    if (!fixed) {
      const std::vector<int64_t> pos(order.begin() + n - 1, order.begin() + n - 1 + W),
          next(order.begin() + n, order.begin() + n + W);
      cache.length = n + 1;  // the kept tokens' slots; a refused draft's slot is overwritten
      return g.decode_window(both(fed.narrow(1, 0, W)), n, pos, next, cond, cache);
    }
    fixed->s.window.copy_(both(fed));
    fixed->s.step.fill_(n);
    if (kind_ == EngineKind::Static) return decode_window_static(g, fixed->s, cache).narrow(1, 0, W);
    if (!fixed->graph)
      fixed->graph = std::make_unique<gpu::StepGraph>([&g, fixed] { return decode_window_static(g, fixed->s, fixed->cache); });
    return fixed->graph->replay().narrow(1, 0, W);
  };
  auto gen = make_generator(device, seed);
  auto out = torch::zeros({B, steps}, ints);  // in generation order: column k = x[τ_{k+1}]
  SpeculativeStats st;
  st.tokens = steps;

  // Step 0 (the prefill) is exact: its token is drawn as the sequential sampler draws.
  auto p0 = distributions(g.decode_prefill(cond, order[0], cache).unsqueeze(1), B, 0, S, opts);
  out.select(1, 0).copy_(draw_from(p0.select(1, 0), gen));
  st.calls = 1, st.positions = 2;
  // Drafts for steps 1 .. W, drawn uniformly (q = 1/V).
  auto draft = torch::randint(V, {B, window}, gen, ints);
  auto q = torch::full({B, window, V}, 1.0 / V, floats);
  for (int64_t n = 1; n < steps;) {
    // One call: x[τ_n] (generated) and the drafts of steps n+1 .. n+W-1 in, p_n .. p_{n+W-1} out.
    const int64_t W = std::min(window, steps - n);
    auto fed = torch::cat({out.narrow(1, n - 1, 1), draft.narrow(1, 0, window - 1)}, 1);
    auto p = distributions(call(fed, n, W), B, n, S, opts);  // [B,W,V]
    ++st.calls, st.positions += W;

    // The speculative-sampling rule in order: draft d ~ q kept when u < p(d) / q(d).
    auto d = draft.narrow(1, 0, W), qw = q.narrow(1, 0, W);
    auto pd = p.gather(2, d.unsqueeze(-1)).squeeze(-1), qd = qw.gather(2, d.unsqueeze(-1)).squeeze(-1);
    auto kept = torch::rand({B, W}, gen, floats) * qd < pd;
    auto a = kept.to(torch::kInt64).cumprod(1).sum(1);  // leading drafts kept, per image
    // Every image has a_i + 1 exact tokens (its kept drafts and the draw replacing the first refused
    // one) within the window: the batch keeps the smallest count.
    const int64_t adv = std::min(a.min().item<int64_t>() + 1, W);
    auto res = (p.narrow(1, 0, adv) - qw.narrow(1, 0, adv)).clamp_min(0);
    res = torch::where(res.sum(-1, true) > 0, res, p.narrow(1, 0, adv));  // p = q: nothing refused there
    auto redraw = draw_from(res.reshape({B * adv, V}), gen).view({B, adv});
    auto j = torch::arange(adv, ints).unsqueeze(0);
    out.narrow(1, n, adv).copy_(torch::where(j < a.unsqueeze(1), d.narrow(1, 0, adv), redraw));

    // The next drafts (steps n+adv ..): from this call's p while it reaches (q = that p), uniform after.
    n += adv;
    const int64_t from_p = W - adv;
    auto next_draft = torch::randint(V, {B, window}, gen, ints);
    auto next_q = torch::full({B, window, V}, 1.0 / V, floats);
    if (from_p > 0) {
      auto pp = p.narrow(1, adv, from_p);
      next_draft.narrow(1, 0, from_p).copy_(draw_from(pp.reshape({B * from_p, V}), gen).view({B, from_p}));
      next_q.narrow(1, 0, from_p).copy_(pp);
    }
    draft = next_draft, q = next_q;
  }
  raster.index_copy_(1, torch::tensor(std::vector<int64_t>(order.begin(), order.begin() + steps), ints), out);
  if (stats) stats->tokens += st.tokens, stats->calls += st.calls, stats->positions += st.positions;
  return raster;
}

}  // namespace rar::sampling
