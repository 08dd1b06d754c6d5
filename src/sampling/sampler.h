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
#include "sampling/logits_chain.h"

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
  std::string attention_kernel = "auto";  // the decode step's attention kernel on CUDA (model/ops/decode_ops.h)

  // Throws rar::Error naming the bad option: as a CLI flag ("--cfg") or, with `fields`, as a
  // request field ("field 'cfg'"). The ranges keep every float32 step of sampling finite (logits
  // of O(100) times guidance or divided by the temperature; a top-p that float32 can hold).
  void validate(bool fields = false) const;
  static constexpr double kMaxCfg = 1e4, kMaxCfgPower = 1e3, kMinTemperature = 1e-4, kMaxTemperature = 1e4,
                          kMinTopP = 1e-6;
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

// Checks a batch: class ids in range, `groups` covering its rows in order with valid settings.
// Returns whether any group is guided (the batch then has a null-class row per class row).
bool check_batch(const model::GeneratorConfig& cfg, const torch::Tensor& classes, const std::vector<RowGroup>& groups);
// The condition tokens of a batch's rows on the model's device: the class rows, then (guided) as
// many null-class rows.
torch::Tensor batch_conditions(model::GeneratorImpl& g, const torch::Tensor& classes, bool guided);

// The row groups' settings as one setting per row, on the device: the logits chain then runs once
// per step for the whole batch, whatever mix of requests it holds (and without waiting for the
// device: a chain run per group stalled the step loop).
struct RowSettings {
  torch::Tensor scale;        // [steps, B] f32: each row's guidance scale at each step (guided batches)
  torch::Tensor unguided;     // [B,1] bool: rows without guidance in a guided batch (else undefined)
  torch::Tensor temperature;  // [B,1] f32 (undefined: all 1)
  torch::Tensor top_k;        // [B,1] int64 in [1, V] (undefined: all off)
  torch::Tensor top_p;        // [B,1] f32 (undefined: all 1)
  torch::Tensor greedy;       // [B] bool: rows with top-k 1 (undefined: none)
  std::vector<RowBlock> drawn;  // the groups that draw (not greedy), with their generators
  std::vector<at::Generator> gens;
  bool all_greedy = false;
};
// For B rows in `groups` (covering [0, B)), S steps of which `steps` are generated, V codes.
RowSettings row_settings(const std::vector<RowGroup>& groups, int64_t B, int64_t steps, int64_t S, int64_t V,
                         bool guided, const torch::Device& device);
// The chain in front of the draw, per row, in two parts: guidance (cond, uncond [N,V] with scale
// [N,1]; rows `r` marks unguided keep cond; uncond undefined: cond), then temperature, top-k and
// top-p as `r` sets them. With repeat > 1 the logits hold `repeat` consecutive rows per row of `r`
// (several steps of each row: speculative decoding).
torch::Tensor guided_logits(const torch::Tensor& cond, const torch::Tensor& uncond, const torch::Tensor& scale,
                            const RowSettings& r, int64_t repeat = 1);
torch::Tensor chain_logits(const torch::Tensor& l, const RowSettings& r, int64_t repeat = 1);

// How a batch's tokens come out of the model, behind one interface: one position per model call
// (SequentialDecoder, below: the KV-cache loop of DESIGN §5) or several (SpeculativeDecoder,
// sampling/speculative: speculative Jacobi decoding). Each keeps its own buffers from batch to
// batch. `stats` (may be null) collects the calls made.
class TokenStrategy {
 public:
  virtual ~TokenStrategy() = default;
  // Tokens [B,S] int64 (raster layout, on the model's device) for class ids [B] in row groups
  // covering [0, B) in order (Sampler::sample_groups).
  virtual torch::Tensor sample_groups(const torch::Tensor& classes, const std::vector<RowGroup>& groups,
                                      SpeculativeStats* stats) = 0;
  virtual EngineKind engine() const = 0;
};

// The sequential strategy: step 0 (prefill), then steps 1 .. S-1, one token per row per step,
// through a DecodeEngine (plain, static or graph).
class SequentialDecoder : public TokenStrategy {
 public:
  // `buffers`: the static and graph kinds' buffers, shared with a speculative strategy (null: its own)
  SequentialDecoder(model::Generator g, const SamplingOptions& opts, std::shared_ptr<StaticBuffers> buffers);
  torch::Tensor sample_groups(const torch::Tensor& classes, const std::vector<RowGroup>& groups,
                              SpeculativeStats* stats) override;
  EngineKind engine() const override { return engine_.kind(); }

 private:
  model::Generator g_;
  int64_t steps_;  // generate only the first steps_ tokens (0: all)
  std::vector<int64_t> order_;
  DecodeEngine engine_;  // keeps its buffers per row count
};

// Which strategy a batch takes: the options' (speculative when opts.speculative > 0), or either
// explicitly (a service picks per batch: speculative for a few images, sequential for many).
enum class Strategy { from_options, sequential, speculative };

class Sampler {
 public:
  // Builds the sequential strategy, and the speculative one when opts.speculative > 0.
  Sampler(model::Generator g, SamplingOptions opts);

  // Tokens [B,S] int64 (raster layout, on the model's device) for class ids [B]. The batch is
  // generated in one pass; `seed` makes it reproducible on the same device.
  torch::Tensor sample_batch(const torch::Tensor& classes, uint64_t seed);
  // The same for a batch made of row groups with settings of their own (`groups` cover [0, B) in
  // order). A group draws from its own generator, seeded with its seed, exactly as sample_batch
  // draws for a batch of just that group's rows — so a group's tokens equal sample_batch's for its
  // rows whenever the model computes each row the same in either batch (always on the CPU in
  // float32; a GPU may round a different batch shape differently).
  torch::Tensor sample_groups(const torch::Tensor& classes, const std::vector<RowGroup>& groups,
                              Strategy strategy = Strategy::from_options);

  // Splits `classes` [N] into batches of `batch`; batch i uses seed opts.seed + i, so any batch
  // can be regenerated alone (resumable runs). `on_batch(first, tokens)` sees each batch.
  torch::Tensor sample(const torch::Tensor& classes, int64_t batch,
                       const std::function<void(int64_t, const torch::Tensor&)>& on_batch = {});

  const SamplingOptions& options() const { return opts_; }
  // The counts of the batches sampled speculatively so far (zeros without them).
  const SpeculativeStats& speculative_stats() const { return spec_; }
  EngineKind engine() const { return sequential_->engine(); }
  static uint64_t batch_seed(uint64_t seed, int64_t batch_index) { return seed + static_cast<uint64_t>(batch_index); }

 private:
  model::Generator g_;
  SamplingOptions opts_;
  std::unique_ptr<TokenStrategy> sequential_, speculative_;  // speculative_: opts.speculative > 0
  SpeculativeStats spec_;
};

// Class ids for `--classes a,b,c --per-class K` (each repeated K times, in order) or, with
// all_classes, K of every class 0..C-1.
torch::Tensor class_list(const std::vector<int64_t>& classes, bool all_classes, int64_t per_class,
                         int64_t num_classes);

}  // namespace rar::sampling
