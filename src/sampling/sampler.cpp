#include "sampling/sampler.h"

#include <cmath>

#include "sampling/logits_chain.h"
#include "sampling/orders.h"
#include "util/error.h"

namespace rar::sampling {

void SamplingOptions::validate() const {
  check(std::isfinite(cfg) && cfg >= 0, "--cfg must be a finite number >= 0, got ", cfg);
  check(std::isfinite(temperature) && temperature > 0, "--temperature must be a finite number > 0, got ", temperature);
  check(std::isfinite(cfg_power) && cfg_power >= 0, "--cfg-power must be a finite number >= 0, got ", cfg_power);
  check(top_k >= 0, "--top-k must be >= 0, got ", top_k);
  check(top_p > 0 && top_p <= 1, "--top-p must lie in (0, 1], got ", top_p);
  check(steps >= 0, "--steps must be >= 0, got ", steps);
  scan_order(order, 4);  // throws for an unknown order name
  check_engine_name(engine);
  parse_kv_cache(kv_cache);
}

Sampler::Sampler(model::Generator g, SamplingOptions opts)
    : g_(std::move(g)),
      opts_(std::move(opts)),
      engine_(g_, (opts_.validate(), parse_engine(opts_.engine, g_->cls_token.device())),
              parse_kv_cache(opts_.kv_cache)) {
  order_ = scan_order(opts_.order, g_->cfg.seq_len);
}

torch::Tensor Sampler::sample_batch(const torch::Tensor& classes, uint64_t seed) {
  return sample_groups(classes, {RowGroup{0, classes.size(0), opts_, seed}});
}

torch::Tensor Sampler::sample_groups(const torch::Tensor& classes_in, const std::vector<RowGroup>& groups) {
  torch::NoGradGuard no_grad;
  const auto& cfg = g_->cfg;
  const auto device = g_->cls_token.device();
  const int64_t B = classes_in.size(0), S = cfg.seq_len;
  check(classes_in.numel() == 0 ||
            (classes_in.min().item<int64_t>() >= 0 && classes_in.max().item<int64_t>() < cfg.classes),
        "class ids must lie in [0, ", cfg.classes, ")");
  int64_t covered = 0;
  bool guided = false;
  for (const auto& grp : groups) {
    check(grp.first == covered && grp.n > 0, "sampler: row groups must cover the batch in order");
    grp.opts.validate();
    covered += grp.n;
    guided = guided || grp.opts.cfg != 0.0;
  }
  check(covered == B, "sampler: row groups cover ", covered, " rows of ", B);
  // Guided groups need the null-class rows; unguided groups in the same batch ignore them.
  auto classes = classes_in.to(device, torch::kInt64);
  auto cond = g_->condition_tokens(classes);
  if (guided) cond = torch::cat({cond, torch::full_like(cond, cfg.null_class_token())});
  engine_.begin(cond, guided ? B : 0, order_);

  std::vector<at::Generator> gens;
  for (const auto& grp : groups) gens.push_back(make_generator(device, grp.seed));
  auto tokens = torch::zeros({B, S}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  const int64_t steps = opts_.steps > 0 ? std::min(opts_.steps, S) : S;
  torch::Tensor logits, fed, next;
  for (int64_t t = 0; t < steps; ++t) {
    // Step 0 feeds cls + class token; step t feeds x[τ_t] (drawn at step t-1).
    logits = t == 0 ? engine_.prefill() : engine_.step(fed, t);
    const bool one = groups.size() == 1;
    if (!one) next = torch::empty({B}, tokens.options());
    for (size_t k = 0; k < groups.size(); ++k) {
      const auto& grp = groups[k];
      const auto& o = grp.opts;
      auto l = one ? (guided ? logits.narrow(0, 0, B) : logits) : logits.narrow(0, grp.first, grp.n);
      if (o.cfg != 0.0) {
        auto u = logits.narrow(0, B + grp.first, grp.n);
        l = apply_guidance(l, u, guidance_scale_at(t, S, o.cfg, o.cfg_power, o.schedule));
      }
      torch::Tensor drawn;
      if (o.top_k == 1) {
        drawn = l.argmax(-1);  // greedy: no randomness, temperature irrelevant
      } else {
        auto c = apply_top_p(apply_top_k(apply_temperature(l, o.temperature), o.top_k), o.top_p);
        drawn = draw(c, gens[k]);
      }
      if (one) next = drawn;
      else next.narrow(0, grp.first, grp.n).copy_(drawn);
    }
    tokens.select(1, order_[t]).copy_(next);
    fed = guided ? torch::cat({next, next}) : next;
  }
  return tokens;
}

torch::Tensor Sampler::sample(const torch::Tensor& classes, int64_t batch,
                              const std::function<void(int64_t, const torch::Tensor&)>& on_batch) {
  check(batch > 0, "--batch must be > 0");
  const int64_t N = classes.size(0);
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0, b = 0; i < N; i += batch, ++b) {
    auto tokens = sample_batch(classes.narrow(0, i, std::min(batch, N - i)), batch_seed(opts_.seed, b));
    if (on_batch) on_batch(i, tokens);
    parts.push_back(tokens.cpu());
  }
  if (parts.empty()) return torch::empty({0, g_->cfg.seq_len}, torch::kInt64);
  return torch::cat(parts);
}

torch::Tensor class_list(const std::vector<int64_t>& classes, bool all_classes, int64_t per_class,
                         int64_t num_classes) {
  check(per_class > 0, "--per-class must be > 0");
  check(all_classes != !classes.empty(), "give either --classes or --all-classes");
  std::vector<int64_t> ids;
  auto add = [&](int64_t c) {
    check(c >= 0 && c < num_classes, "class id ", c, " out of range [0, ", num_classes, ")");
    for (int64_t k = 0; k < per_class; ++k) ids.push_back(c);
  };
  if (all_classes)
    for (int64_t c = 0; c < num_classes; ++c) add(c);
  else
    for (int64_t c : classes) add(c);
  return torch::tensor(ids, torch::kInt64);
}

}  // namespace rar::sampling
