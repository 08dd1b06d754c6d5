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

// The loop's state between calls and one call's inputs, on the device. The static and graph
// kinds keep one per row count, at fixed addresses: the graph kind captures a whole iteration (the
// call, the acceptance rule, the next drafts) and replays it on them.
struct SpeculativeLoop {
  torch::Tensor out;    // [B, steps+W] int64: tokens in generation order (column k = x[τ_{k+1}]), then padding
  torch::Tensor n;      // [B] int64: each row's tokens so far
  torch::Tensor draft;  // [B,W] int64: the drafts of steps n .. n+W-1
  torch::Tensor q;      // [B,W,V] f32: the distributions they were drawn from
  // one call's random numbers, drawn before it from each group's generator in this order
  torch::Tensor uniform, exp_refused, exp_next, codes;  // [B,W], [B,W,V], [B,W,V], [B,W]
  RowSettings rows;     // the batch's settings (copied in place while the layout stays)
  torch::Tensor scale;  // [B, steps+W] f32: row b's guidance scale at step k (guided batches)

  // The batch's settings, the one list that both the layout key and copying settings between
  // loops of one layout read.
  std::vector<torch::Tensor*> settings() {
    return {&scale, &rows.unguided, &rows.temperature, &rows.top_k, &rows.top_p, &rows.greedy};
  }
  // Every tensor of the loop: a deep copy (an iteration run outside the real buffers: the graph's
  // warm-up) clones all of them, so no tensor an iteration writes can be missed.
  std::vector<torch::Tensor*> tensors() {
    auto all = settings();
    for (auto* t : {&out, &n, &draft, &q, &uniform, &exp_refused, &exp_next, &codes}) all.push_back(t);
    return all;
  }
  SpeculativeLoop deep_copy() const {
    SpeculativeLoop c = *this;
    for (auto* t : c.tensors())
      if (t->defined()) *t = t->clone();
    return c;
  }
};

namespace {

using Loop = SpeculativeLoop;

// What one iteration needs to know of the batch.
struct Step {
  int64_t B, V, steps, window;
  bool guided;
  bool common;  // the plain kind: every row advances by the batch's smallest count
};

// The layout of a loop's settings: which of them it has, and their shapes — the loops of one
// layout take each other's settings by copying (a captured graph reads them at fixed addresses).
std::string layout_key(Loop& l) {
  std::string key;
  for (const auto* t : l.settings()) {
    key += t->defined() ? "[" : "-";
    if (t->defined())
      for (auto d : t->sizes()) key += std::to_string(d) + ",";
  }
  return key + (l.rows.all_greedy ? "greedy" : "drawn");
}

// Loops of one layout (the same key) have the same settings tensors, defined alike.
void copy_settings(Loop& to, Loop& from) {
  const auto x = to.settings(), y = from.settings();
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i]->defined()) x[i]->copy_(*y[i]);
}

// The next token of rows [N,V] of probabilities: argmax(p / e), e ~ Exp(1) — a draw from p (the
// sequential sampler's draw_rows does the same on softmax(logits)). `noise` is e.
torch::Tensor draw_from(const torch::Tensor& p, const torch::Tensor& noise) { return (p / noise).argmax(-1); }

// The sampling distributions [B,n,V] of row b's steps k[b] .. k[b]+n-1 from the model's logits
// [R,n,V]: the sequential sampler's chain (guidance, temperature, top-k, top-p) as
// probabilities, one-hot for greedy rows. No host syncs (a graph captures it).
torch::Tensor distributions(const Step& st, const Loop& L, const torch::Tensor& logits, const torch::Tensor& k) {
  const int64_t B = st.B, V = st.V, n = logits.size(1);
  auto l = logits.narrow(0, 0, B).reshape({B * n, V});
  if (st.guided) {
    auto at = k.unsqueeze(1) + torch::arange(n, k.options()).unsqueeze(0);  // [B,n]
    auto u = logits.narrow(0, B, B).reshape({B * n, V});
    l = guided_logits(l, u, L.scale.gather(1, at).reshape({B * n, 1}), L.rows, n);
  }
  // one-hot of the argmax (a scatter: one_hot checks its input on the host)
  auto hard = [&] { return torch::zeros_like(l).scatter_(1, l.argmax(-1, true), 1.0); };
  torch::Tensor p = L.rows.all_greedy ? hard() : chain_logits(l, L.rows, n).softmax(-1);
  if (!L.rows.all_greedy && L.rows.greedy.defined())
    p = torch::where(L.rows.greedy.unsqueeze(1).expand({B, n}).reshape({B * n, 1}), hard(), p);
  return p.view({B, n, V});
}

// The speculative-sampling rule on one call's logits [R,W,V], in place on L: drafts kept in order,
// the first refused one redrawn, the next drafts drawn — with L's random numbers.
void accept(const Step& st, Loop& L, const torch::Tensor& logits) {
  const int64_t B = st.B, V = st.V, W = st.window;
  auto p = distributions(st, L, logits, L.n);       // [B,W,V]
  const auto left = (st.steps - L.n).clamp_min(0);  // [B]
  // draft d ~ q kept when u < p(d) / q(d), within the positions that count (a row near its end has fewer)
  const auto& d = L.draft;
  auto pd = p.gather(2, d.unsqueeze(-1)).squeeze(-1), qd = L.q.gather(2, d.unsqueeze(-1)).squeeze(-1);
  const auto j = torch::arange(W, L.n.options()).unsqueeze(0);
  const auto counts = j < left.clamp_max(W).unsqueeze(1);
  auto kept = (L.uniform * qd < pd).logical_and_(counts);
  auto a = kept.to(torch::kInt64).cumprod(1).sum(1);  // leading drafts kept, per row
  // Each row has a + 1 exact tokens (its kept drafts and a draw replacing the first refused one)
  // within what counts; the plain kind keeps the batch's smallest count (one common step).
  auto adv = torch::minimum(a + 1, left.clamp_max(W));
  if (st.common) adv = adv.min().expand({B});
  auto res = (p - L.q).clamp_min(0);
  res = torch::where(res.sum(-1, true) > 0, res, p);  // p = q: nothing refused there
  auto chosen = torch::where(j < a.unsqueeze(1), d, draw_from(res, L.exp_refused));
  const auto cols = L.n.unsqueeze(1) + j;  // [B,W], inside the padded columns
  L.out.scatter_(1, cols, torch::where(j < adv.unsqueeze(1), chosen, L.out.gather(1, cols)));
  // The next drafts (steps n+adv ..): from this call's p while it reaches (q = that p), uniform after.
  const auto from = (adv.unsqueeze(1) + j).clamp_max(W - 1);  // [B,W]
  auto pp = p.gather(1, from.unsqueeze(2).expand({B, W, V}));
  const auto use_p = j < (W - adv).unsqueeze(1);
  L.q.copy_(torch::where(use_p.unsqueeze(2), pp, torch::full({}, 1.0 / V, pp.options())));
  L.draft.copy_(torch::where(use_p, draw_from(pp, L.exp_next), L.codes));
  L.n.add_(adv);
}

}  // namespace

SpeculativeDecoder::SpeculativeDecoder(model::Generator g, SamplingOptions opts, std::shared_ptr<StaticBuffers> buffers)
    : g_(std::move(g)), opts_(std::move(opts)), kind_(EngineKind::Plain), buffers_(std::move(buffers)) {
  opts_.validate();
  check(opts_.speculative >= 1, "--speculative must be >= 1 positions per call, got ", opts_.speculative);
  kind_ = parse_engine(opts_.engine, g_->cls_token.device());
  order_ = scan_order(opts_.order, g_->cfg.seq_len);
  check(kind_ == EngineKind::Plain || (buffers_ && buffers_->window() >= opts_.speculative),
        "speculative decoding: the static and graph kinds need buffers for a window of ", opts_.speculative);
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
  Loop fresh;
  fresh.rows = row_settings(groups, B, steps, S, V, guided, device);
  // each row's guidance scale at steps 0 .. steps+W-1 ([B, steps+W]; a window's columns past the end repeat the last)
  if (guided)
    fresh.scale = torch::cat({fresh.rows.scale, fresh.rows.scale.narrow(0, steps - 1, 1).expand({window, B})}).t().contiguous();

  // The calls: on the plain path (every row at the same step: the cache grown and rewound) or with
  // static shapes (W columns at every call, each row at its own step; the graph kind captures a
  // whole iteration once per row count and replays it, on buffers kept from batch to batch).
  model::KVCache plain_cache;
  StaticBuffers::Rows* fixed = nullptr;
  if (kind_ == EngineKind::Plain) plain_cache = g.make_cache(R, S + 1, parse_kv_cache(opts_.kv_cache));
  else fixed = &buffers_->begin(class_rows, guided ? B : 0, order);
  // The loop's buffers: for the static and graph kinds, those kept for this row count and layout
  // of settings (this batch's settings copied in: a captured iteration replays on them), else
  // this batch's.
  const std::string layout = layout_key(fresh);
  std::shared_ptr<Loop> kept;
  if (fixed) {
    auto& slot = loops_[{R, layout}];
    if (slot) copy_settings(*slot, fresh);
    else slot = std::make_shared<Loop>(fresh);
    kept = slot;
  }
  Loop& L = kept ? *kept : fresh;
  if (!L.out.defined()) {
    L.out = torch::zeros({B, steps + window}, ints);
    L.n = torch::ones({B}, ints);
    L.draft = torch::zeros({B, window}, ints);
    L.q = torch::empty({B, window, V}, floats);
    L.uniform = torch::empty({B, window}, floats);
    L.exp_refused = torch::empty({B, window, V}, floats);
    L.exp_next = torch::empty({B, window, V}, floats);
    L.codes = torch::empty({B, window}, ints);
  }
  auto& cache = fixed ? fixed->cache : plain_cache;

  // Random numbers: each group from its own generator, seeded with its seed, the same amount at
  // every call whatever the other rows do — so with rows advancing on their own (static and graph
  // kinds) a group's tokens do not depend on who shares its batch.
  std::vector<at::Generator> gens;
  for (const auto& grp : groups) gens.push_back(make_generator(device, grp.seed));
  auto per_group = [&](const torch::Tensor& t, const std::function<void(torch::Tensor, at::Generator&)>& fill) {
    for (size_t i = 0; i < groups.size(); ++i) fill(t.narrow(0, groups[i].first, groups[i].n), gens[i]);
  };
  auto uniform = [](torch::Tensor x, at::Generator& gen) { x.uniform_(0, 1, gen); };
  auto exponential = [](torch::Tensor x, at::Generator& gen) { x.exponential_(1, gen); };
  auto codes = [V](torch::Tensor x, at::Generator& gen) { x.random_(0, V, gen); };
  const Step step{B, V, steps, window, guided, fixed == nullptr};

  SpeculativeStats st;
  st.tokens = steps;
  // Step 0 (the prefill) is exact: its token is drawn as the sequential sampler draws.
  {
    auto p0 = distributions(step, L, g.decode_prefill(cond, order[0], cache).unsqueeze(1), torch::zeros({B}, ints));
    auto e = torch::empty_like(p0);
    per_group(e, exponential);
    L.out.zero_();
    L.out.select(1, 0).copy_(draw_from(p0, e).select(1, 0));
  }
  st.calls = 1, st.positions = 2;
  L.n.fill_(1);
  // Drafts for steps 1 .. W, drawn uniformly (q = 1/V).
  per_group(L.draft, codes);
  L.q.fill_(1.0 / V);
  // One iteration on the static window: the call (x[τ_n] and the next W-1 drafts in, p_n ..
  // p_{n+W-1} out) and the acceptance rule, in place on L — what the graph kind captures.
  auto iterate = [&g, fixed, both, step, S](Loop& on) {
    auto fed = torch::cat({on.out.gather(1, (on.n - 1).unsqueeze(1)), on.draft.narrow(1, 0, step.window - 1)}, 1);
    fixed->s.window.copy_(both(fed));
    fixed->s.window_step.copy_(both(on.n.clamp_max(S - 1)));  // a finished row idles at the last step
    accept(step, on, decode_window_static(g, fixed->s, fixed->cache));
    return on.n;
  };
  // Whether every image is done is read back every iteration, except on a GPU with the static or
  // graph kind: every 4th there, so the host queues the next calls while the device runs this one
  // (finished images idle through at most 3 extra calls; the plain kind's common step lives on the
  // host anyway).
  const int64_t check_every = fixed && device.is_cuda() ? 4 : 1;
  // the graph kind's captured iteration for this layout (looked up once, not at every call)
  std::unique_ptr<gpu::StepGraph>* graph = kind_ == EngineKind::Graph ? &fixed->graphs["window " + layout] : nullptr;
  for (int64_t it = 0;; ++it) {
    if (it % check_every == 0 && L.n.min().item<int64_t>() >= steps) break;
    per_group(L.uniform, uniform);
    per_group(L.exp_refused, exponential);
    per_group(L.exp_next, exponential);
    per_group(L.codes, codes);
    ++st.calls;
    if (!fixed) {
      // the plain kind's common step: W positions through the grown cache, rewound to the kept tokens
      const int64_t n_plain = L.n[0].item<int64_t>();
      const int64_t W = std::min(window, steps - n_plain);
      const std::vector<int64_t> pos(order.begin() + n_plain - 1, order.begin() + n_plain - 1 + W),
          next(order.begin() + n_plain, order.begin() + n_plain + W);
      cache.length = n_plain + 1;  // the kept tokens' slots; a refused draft's slot is overwritten
      st.positions += W;
      auto fed = torch::cat({L.out.narrow(1, n_plain - 1, 1), L.draft.narrow(1, 0, W - 1)}, 1);
      auto l = g.decode_window(both(fed), n_plain, pos, next, cond, cache);
      // W columns as the static kinds have them (past the last step: repeats, never kept)
      accept(step, L, W == window ? l : torch::cat({l, l.narrow(1, W - 1, 1).expand({R, window - W, V})}, 1));
      continue;
    }
    st.positions += window;
    if (kind_ == EngineKind::Static) {
      iterate(L);
    } else if (*graph) {
      (*graph)->replay();
    } else {
      // the warm-up before the capture iterates on a deep copy of the loop (the cache it writes
      // is written again, identically, by the replay)
      *graph = std::make_unique<gpu::StepGraph>([iterate, &L] { return iterate(L); }, gpu::StepGraphOptions{},
                                                [iterate, &L] {
                                                  Loop copy = L.deep_copy();
                                                  return iterate(copy);
                                                });
      (*graph)->replay();
    }
  }
  auto raster = torch::zeros({B, S}, ints);
  raster.index_copy_(1, torch::tensor(std::vector<int64_t>(order.begin(), order.begin() + steps), ints),
                     L.out.narrow(1, 0, steps));
  if (stats) stats->tokens += st.tokens, stats->calls += st.calls, stats->positions += st.positions;
  return raster;
}

}  // namespace rar::sampling
