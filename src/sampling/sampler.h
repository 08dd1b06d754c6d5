// sampler.h — class-conditional token generation with the KV cache (DESIGN §5): S steps, one
// token per step in the scan order, classifier-free guidance on a doubled batch, then the
// temperature -> top-k -> top-p -> draw chain.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/generator.h"
#include "sampling/engine.h"
#include "sampling/guidance.h"

namespace rar::sampling {

struct SamplingOptions {
  double cfg = 0.0;         // guidance scale g; 0 = no guidance
  double cfg_power = 0.0;   // p of the pow-cosine schedule
  GuidanceSchedule schedule = GuidanceSchedule::PowCosine;
  double temperature = 1.0;
  int64_t top_k = 0;        // 0 = off; 1 = greedy
  double top_p = 1.0;       // 1 = off
  std::string order = "raster";
  uint64_t seed = 0;
  int64_t steps = 0;        // generate only the first `steps` tokens (benchmarks); 0 = all S
  std::string engine = "auto";  // plain | static | graph | auto (sampling/engine.h)
  std::string kv_cache = "model";  // the KV cache's dtype: model (the model's) | fp8 (e4m3: half the bytes)
  int64_t speculative = 0;  // W > 0: speculative Jacobi decoding, W positions per model call (sampling/speculative)

  void validate() const;  // throws rar::Error naming the bad option
};

// What speculative decoding did (sampling/speculative), summed over batches.
struct SpeculativeStats {
  int64_t tokens = 0;     // tokens generated per image (the steps), summed over batches
  int64_t calls = 0;      // model calls: the prefill and one per iteration
  int64_t positions = 0;  // positions fed per row over all calls (the work done)
};

// One request's rows within a batch (the service coalesces several): rows [first, first + n) of
// the batch, sampled with their own guidance, logits chain and random stream. The scan order,
// engine, cache dtype and step count are the batch's (the Sampler's options).
struct RowGroup {
  int64_t first = 0, n = 0;
  SamplingOptions opts;  // cfg, cfg_power, schedule, temperature, top_k, top_p are used
  uint64_t seed = 0;
};

class Sampler {
 public:
  Sampler(model::Generator g, SamplingOptions opts);

  // Tokens [B,S] int64 (raster layout, on the model's device) for class ids [B]. The batch is
  // generated in one pass; `seed` makes it reproducible on the same device.
  torch::Tensor sample_batch(const torch::Tensor& classes, uint64_t seed);
  // The same for a batch made of row groups with settings of their own (`groups` cover [0, B) in
  // order). A group draws from its own generator, seeded with its seed, exactly as sample_batch
  // draws for a batch of just that group's rows — so a group's tokens equal sample_batch's for its
  // rows whenever the model computes each row the same in either batch (always on the CPU in
  // float32; a GPU may round a different batch shape differently).
  torch::Tensor sample_groups(const torch::Tensor& classes, const std::vector<RowGroup>& groups);

  // Splits `classes` [N] into batches of `batch`; batch i uses seed opts.seed + i, so any batch
  // can be regenerated alone (resumable runs). `on_batch(first, tokens)` sees each batch.
  torch::Tensor sample(const torch::Tensor& classes, int64_t batch,
                       const std::function<void(int64_t, const torch::Tensor&)>& on_batch = {});

  const SamplingOptions& options() const { return opts_; }
  // With opts.speculative > 0: the counts of the batches sampled so far (zeros otherwise).
  const SpeculativeStats& speculative_stats() const { return spec_; }
  EngineKind engine() const { return engine_.kind(); }
  static uint64_t batch_seed(uint64_t seed, int64_t batch_index) { return seed + static_cast<uint64_t>(batch_index); }

 private:
  model::Generator g_;
  SamplingOptions opts_;
  std::vector<int64_t> order_;
  DecodeEngine engine_;  // keeps its buffers while the batch size stays the same
  std::shared_ptr<class SpeculativeDecoder> speculative_;  // opts.speculative > 0 (sampling/speculative)
  SpeculativeStats spec_;
};

// Class ids for `--classes a,b,c --per-class K` (each repeated K times, in order) or, with
// all_classes, K of every class 0..C-1.
torch::Tensor class_list(const std::vector<int64_t>& classes, bool all_classes, int64_t per_class,
                         int64_t num_classes);

}  // namespace rar::sampling
