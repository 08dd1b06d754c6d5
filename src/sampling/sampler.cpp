#include "sampling/sampler.h"

#include "sampling/logits_chain.h"
#include "sampling/orders.h"
#include "util/error.h"

#ifdef RAR_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace rar::sampling {

void SamplingOptions::validate() const {
  check(temperature > 0, "--temperature must be > 0, got ", temperature);
  check(cfg_power >= 0, "--cfg-power must be >= 0, got ", cfg_power);
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

// One batch in progress: its engine, random generator and tokens, and the tokens fed next step.
struct Sampler::Batch {
  DecodeEngine* engine = nullptr;
  at::Generator gen;
  torch::Tensor tokens, fed;
  bool guided = false;
};

#ifdef RAR_WITH_CUDA
struct Sampler::Streams {
  std::vector<c10::cuda::CUDAStream> side;  // stream i runs side_engines_[i]
};
#else
struct Sampler::Streams {};
#endif

int64_t Sampler::step_count() const {
  const int64_t S = g_->cfg.seq_len;
  return opts_.steps > 0 ? std::min(opts_.steps, S) : S;
}

void Sampler::begin_batch(Batch& b, DecodeEngine& engine, const torch::Tensor& classes_in, uint64_t seed) {
  const auto& cfg = g_->cfg;
  const auto device = g_->cls_token.device();
  const int64_t B = classes_in.size(0);
  check(classes_in.numel() == 0 ||
            (classes_in.min().item<int64_t>() >= 0 && classes_in.max().item<int64_t>() < cfg.classes),
        "class ids must lie in [0, ", cfg.classes, ")");
  b.engine = &engine;
  b.guided = opts_.cfg != 0.0;
  auto classes = classes_in.to(device, torch::kInt64);
  auto cond = g_->condition_tokens(classes);
  if (b.guided) cond = torch::cat({cond, torch::full_like(cond, cfg.null_class_token())});
  engine.begin(cond, b.guided ? B : 0, order_);
  b.gen = make_generator(device, seed);
  b.tokens = torch::zeros({B, cfg.seq_len}, torch::TensorOptions().dtype(torch::kInt64).device(device));
}

// Step t: step 0 feeds cls + class token; step t feeds x[τ_t] (drawn at step t-1).
void Sampler::advance(Batch& b, int64_t t) {
  auto logits = t == 0 ? b.engine->prefill() : b.engine->step(b.fed, t);
  if (b.guided) {
    auto halves = logits.chunk(2, 0);
    logits = apply_guidance(halves[0], halves[1],
                            guidance_scale_at(t, g_->cfg.seq_len, opts_.cfg, opts_.cfg_power, opts_.schedule));
  }
  torch::Tensor next;
  if (opts_.top_k == 1) {
    next = logits.argmax(-1);  // greedy: no randomness, temperature irrelevant
  } else {
    auto l = apply_top_p(apply_top_k(apply_temperature(logits, opts_.temperature), opts_.top_k), opts_.top_p);
    next = draw(l, b.gen);
  }
  b.tokens.select(1, order_[t]).copy_(next);
  b.fed = b.guided ? torch::cat({next, next}) : next;
}

torch::Tensor Sampler::sample_batch(const torch::Tensor& classes, uint64_t seed) {
  torch::NoGradGuard no_grad;
  Batch b;
  begin_batch(b, engine_, classes, seed);
  for (int64_t t = 0, steps = step_count(); t < steps; ++t) advance(b, t);
  return b.tokens;
}

std::vector<torch::Tensor> Sampler::sample_batches(const std::vector<torch::Tensor>& classes,
                                                   const std::vector<uint64_t>& seeds) {
  torch::NoGradGuard no_grad;
  check(classes.size() == seeds.size(), "sample_batches: ", classes.size(), " class lists but ", seeds.size(),
        " seeds");
  const size_t K = classes.size();
  while (side_engines_.size() < K)
    side_engines_.emplace_back(g_, engine_.kind(), parse_kv_cache(opts_.kv_cache));
  std::vector<Batch> batches(K);
#ifdef RAR_WITH_CUDA
  const auto device = g_->cls_token.device();
  if (device.is_cuda()) {
    // Each batch on its own stream (the same one every call: its engine's buffers stay on it),
    // after the caller's stream's work; the caller's stream then waits for all of them, and the
    // tokens' memory is not reused before its work on them is done (record_stream).
    if (!streams_) streams_ = std::make_shared<Streams>();
    while (streams_->side.size() < K) streams_->side.push_back(c10::cuda::getStreamFromPool(false, device.index()));
    auto caller = c10::cuda::getCurrentCUDAStream(device.index());
    at::cuda::CUDAEvent before;
    before.record(caller);
    for (size_t i = 0; i < K; ++i) {
      before.block(streams_->side[i]);
      c10::cuda::CUDAStreamGuard guard(streams_->side[i]);
      begin_batch(batches[i], side_engines_[i], classes[i], seeds[i]);
    }
    for (int64_t t = 0, steps = step_count(); t < steps; ++t)
      for (size_t i = 0; i < K; ++i) {
        c10::cuda::CUDAStreamGuard guard(streams_->side[i]);
        advance(batches[i], t);
      }
    std::vector<torch::Tensor> tokens;
    for (size_t i = 0; i < K; ++i) {
      at::cuda::CUDAEvent done;
      done.record(streams_->side[i]);
      done.block(caller);
      batches[i].tokens.record_stream(caller);
      tokens.push_back(batches[i].tokens);
    }
    return tokens;
  }
#endif
  for (size_t i = 0; i < K; ++i) begin_batch(batches[i], side_engines_[i], classes[i], seeds[i]);
  for (int64_t t = 0, steps = step_count(); t < steps; ++t)
    for (auto& b : batches) advance(b, t);
  std::vector<torch::Tensor> tokens;
  for (auto& b : batches) tokens.push_back(b.tokens);
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
