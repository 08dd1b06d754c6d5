#include "sampling/sampler.h"

#include <cmath>

#include "sampling/logits_chain.h"
#include "sampling/orders.h"
#include "sampling/speculative.h"
#include "util/error.h"

namespace rar::sampling {

void SamplingOptions::validate(bool fields) const {
  auto name = [&](const char* flag, const char* field) {
    return fields ? std::string("field '") + field + "'" : std::string(flag);
  };
  check(std::isfinite(cfg) && cfg >= 0 && cfg <= kMaxCfg, name("--cfg", "cfg"), " must lie in [0, ", kMaxCfg, "], got ", cfg);
  check(std::isfinite(temperature) && temperature >= kMinTemperature && temperature <= kMaxTemperature,
        name("--temperature", "temperature"), " must lie in [", kMinTemperature, ", ", kMaxTemperature, "], got ",
        temperature);
  check(std::isfinite(cfg_power) && cfg_power >= 0 && cfg_power <= kMaxCfgPower, name("--cfg-power", "cfg_power"),
        " must lie in [0, ", kMaxCfgPower, "], got ", cfg_power);
  check(top_k >= 0, name("--top-k", "top_k"), " must be >= 0, got ", top_k);
  check(top_p >= kMinTopP && top_p <= 1, name("--top-p", "top_p"), " must lie in [", kMinTopP, ", 1], got ", top_p);
  check(steps >= 0, "--steps must be >= 0, got ", steps);
  check(speculative >= 0, "--speculative must be >= 0 (0 = off), got ", speculative);
  scan_order(order, 4);  // throws for an unknown order name
  check_engine_name(engine);
  parse_kv_cache(kv_cache);
  model::parse_attention_kernel(attention_kernel);
}

Sampler::Sampler(model::Generator g, SamplingOptions opts) : g_(std::move(g)), opts_(std::move(opts)) {
  opts_.validate();
  // one set of static-shape buffers (KV cache, step inputs, captured graphs) for both strategies
  std::shared_ptr<StaticBuffers> buffers;
  if (parse_engine(opts_.engine, g_->cls_token.device()) != EngineKind::Plain)
    buffers = std::make_shared<StaticBuffers>(g_, opts_.speculative, parse_kv_cache(opts_.kv_cache),
                                              model::parse_attention_kernel(opts_.attention_kernel));
  sequential_ = std::make_unique<SequentialDecoder>(g_, opts_, buffers);
  if (opts_.speculative > 0) speculative_ = std::make_unique<SpeculativeDecoder>(g_, opts_, buffers);
}

SequentialDecoder::SequentialDecoder(model::Generator g, const SamplingOptions& opts,
                                     std::shared_ptr<StaticBuffers> buffers)
    : g_(std::move(g)),
      steps_(opts.steps),
      order_(scan_order(opts.order, g_->cfg.seq_len)),
      engine_(g_, parse_engine(opts.engine, g_->cls_token.device()), parse_kv_cache(opts.kv_cache),
              model::parse_attention_kernel(opts.attention_kernel), std::move(buffers)) {}

torch::Tensor Sampler::sample_batch(const torch::Tensor& classes, uint64_t seed) {
  return sample_groups(classes, {RowGroup{0, classes.size(0), opts_, seed}});
}

RowSettings row_settings(const std::vector<RowGroup>& groups, int64_t B, int64_t steps, int64_t S, int64_t V,
                         bool guided, const torch::Device& device) {
  RowSettings r;
  std::vector<float> scale(guided ? steps * B : 0), temperature(B), top_p(B);
  std::vector<int64_t> top_k(B);
  std::vector<uint8_t> unguided(B), greedy(B);
  bool any_unguided = false, any_t = false, any_k = false, any_p = false, any_greedy = false;
  r.all_greedy = true;
  for (const auto& grp : groups) {
    const auto& o = grp.opts;
    for (int64_t i = grp.first; i < grp.first + grp.n; ++i) {
      for (int64_t t = 0; guided && t < steps; ++t)
        scale[t * B + i] = o.cfg != 0.0 ? guidance_scale_at(t, S, o.cfg, o.cfg_power, o.schedule) : 1.0f;
      unguided[i] = o.cfg == 0.0;
      temperature[i] = static_cast<float>(o.temperature);
      top_k[i] = o.top_k <= 0 || o.top_k >= V ? V : o.top_k;
      top_p[i] = static_cast<float>(o.top_p);
      greedy[i] = o.top_k == 1;
    }
    any_unguided |= o.cfg == 0.0;
    any_t |= o.temperature != 1.0;
    any_k |= o.top_k > 1 && o.top_k < V;
    any_p |= o.top_p < 1.0;
    any_greedy |= o.top_k == 1;
    r.all_greedy &= o.top_k == 1;
    if (o.top_k != 1) {
      r.drawn.push_back(RowBlock{grp.first, grp.n});
      r.gens.push_back(make_generator(device, grp.seed));
    }
  }
  auto column = [&](auto& v, at::ScalarType dt) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    return torch::from_blob(v.data(), {static_cast<int64_t>(v.size())}, c10::CppTypeToScalarType<T>::value)
        .to(device, dt, /*non_blocking=*/false, /*copy=*/true).view({-1, 1});
  };
  if (guided) r.scale = torch::from_blob(scale.data(), {steps, B}, torch::kFloat32).to(device, torch::kFloat32, false, /*copy=*/true);
  if (guided && any_unguided) r.unguided = column(unguided, torch::kBool);
  if (any_t) r.temperature = column(temperature, torch::kFloat32);
  if (any_k) r.top_k = column(top_k, torch::kInt64);
  if (any_p) r.top_p = column(top_p, torch::kFloat32);
  if (any_greedy) r.greedy = column(greedy, torch::kBool).view({-1});
  return r;
}

namespace {
// a row setting [B,1] for `repeat` consecutive rows per row ([B·repeat,1]; no host sync, so a
// CUDA graph can capture it: repeat_interleave may read its output size back)
torch::Tensor per_step(const torch::Tensor& t, int64_t repeat) {
  return repeat == 1 ? t : t.unsqueeze(1).expand({t.size(0), repeat, t.size(1)}).reshape({-1, t.size(1)});
}
}  // namespace

torch::Tensor guided_logits(const torch::Tensor& cond, const torch::Tensor& uncond, const torch::Tensor& scale,
                            const RowSettings& r, int64_t repeat) {
  if (!uncond.defined()) return cond;
  auto g = apply_guidance(cond, uncond, scale);
  return r.unguided.defined() ? torch::where(per_step(r.unguided, repeat), cond, g) : g;
}

torch::Tensor chain_logits(const torch::Tensor& l, const RowSettings& r, int64_t repeat) {
  auto c = r.temperature.defined() ? apply_temperature_rows(l, per_step(r.temperature, repeat)) : l;
  if (r.top_k.defined()) c = apply_top_k_rows(c, per_step(r.top_k, repeat));
  if (r.top_p.defined()) c = apply_top_p_rows(c, per_step(r.top_p, repeat));
  return c;
}

bool check_batch(const model::GeneratorConfig& cfg, const torch::Tensor& classes, const std::vector<RowGroup>& groups) {
  check(classes.numel() == 0 || (classes.min().item<int64_t>() >= 0 && classes.max().item<int64_t>() < cfg.classes),
        "class ids must lie in [0, ", cfg.classes, ")");
  int64_t covered = 0;
  bool guided = false;
  for (const auto& grp : groups) {
    check(grp.first == covered && grp.n > 0, "sampler: row groups must cover the batch in order");
    grp.opts.validate();
    covered += grp.n;
    guided = guided || grp.opts.cfg != 0.0;
  }
  check(covered == classes.size(0), "sampler: row groups cover ", covered, " rows of ", classes.size(0));
  return guided;
}

torch::Tensor batch_conditions(model::GeneratorImpl& g, const torch::Tensor& classes, bool guided) {
  auto cond = g.condition_tokens(classes.to(g.cls_token.device(), torch::kInt64));
  // guided groups need the null-class rows; unguided groups in the same batch ignore them
  return guided ? torch::cat({cond, torch::full_like(cond, g.cfg.null_class_token())}) : cond;
}

torch::Tensor Sampler::sample_groups(const torch::Tensor& classes, const std::vector<RowGroup>& groups,
                                     Strategy strategy) {
  const bool speculative = strategy == Strategy::speculative || (strategy == Strategy::from_options && speculative_);
  check(!speculative || speculative_, "sampler: speculative decoding needs opts.speculative > 0");
  return speculative ? speculative_->sample_groups(classes, groups, &spec_)
                     : sequential_->sample_groups(classes, groups, nullptr);
}

torch::Tensor SequentialDecoder::sample_groups(const torch::Tensor& classes_in, const std::vector<RowGroup>& groups,
                                               SpeculativeStats*) {
  torch::NoGradGuard no_grad;
  const auto& cfg = g_->cfg;
  const auto device = g_->cls_token.device();
  const int64_t B = classes_in.size(0), S = cfg.seq_len;
  const bool guided = check_batch(cfg, classes_in, groups);
  auto cond = batch_conditions(*g_, classes_in, guided);
  engine_.begin(cond, guided ? B : 0, order_);

  const int64_t steps = steps_ > 0 ? std::min(steps_, S) : S;
  auto rows = row_settings(groups, B, steps, S, g_->lm_head->weight.size(0), guided, device);
  auto tokens = torch::zeros({B, S}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  torch::Tensor logits, fed, next;
  for (int64_t t = 0; t < steps; ++t) {
    // Step 0 feeds cls + class token; step t feeds x[τ_t] (drawn at step t-1).
    logits = t == 0 ? engine_.prefill() : engine_.step(fed, t);
    auto l = guided ? guided_logits(logits.narrow(0, 0, B), logits.narrow(0, B, B), rows.scale.select(0, t).unsqueeze(1), rows)
                    : logits;
    if (rows.all_greedy) {
      next = l.argmax(-1);  // greedy: no randomness, temperature irrelevant
    } else {
      next = draw_rows(chain_logits(l, rows), rows.drawn, rows.gens);
      if (rows.greedy.defined()) next = torch::where(rows.greedy, l.argmax(-1), next);
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
