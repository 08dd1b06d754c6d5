// speculative.h — speculative Jacobi decoding (Teng et al. 2024, "Accelerating auto-regressive
// text-to-image generation with training-free speculative Jacobi decoding"): fewer model calls
// per image for small batches, with the token distribution unchanged (`--speculative W`).
//
// The loop keeps W draft tokens after the n tokens generated so far. Each iteration feeds the last
// generated token and W-1 drafts in one call (Generator::decode_window) and gets the sampling
// distributions p_n .. p_{n+W-1} — p_n exact, the later ones conditioned on the drafts before
// them. Drafts are then checked in order with the speculative-sampling rule: draft d, drawn from
// q, is kept with probability min(1, p(d) / q(d)); the first one refused is replaced by a draw
// from max(0, p - q) normalised, and the rest are dropped. Every kept token is then distributed
// exactly as sequential sampling's (the rule's guarantee: p_j is exact once the tokens before j
// are kept). The next drafts are drawn from this iteration's p (the Jacobi update; their q is that
// p), new ones beyond the window uniformly.
//
// It draws other random numbers than Sampler::sample_batch: the same distribution, not the same
// tokens for a seed. The calls run as opts.engine says: plain (Generator::decode_window, the KV
// cache rewound to the kept tokens; the batch advances by its slowest image), static
// (sampling/static_decode decode_window_static: W columns at every call, masked attention over the
// whole cache, every image at its own step) or graph (a whole iteration — that call, the
// acceptance rule and the next drafts — captured in a CUDA graph once per row count and replayed;
// only the random numbers are drawn outside it).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/generator.h"
#include "sampling/engine.h"
#include "sampling/sampler.h"
#include "sampling/static_decode.h"
#include "util/gpu.h"

namespace rar::sampling {

class SpeculativeDecoder : public TokenStrategy {
 public:
  // `opts` (guidance, its schedule, temperature, top-k, top-p, scan order, steps, engine, KV cache
  // dtype) with W = opts.speculative >= 1 positions per call. The static and graph kinds keep their
  // buffers in `buffers` (the Sampler's, shared with its sequential strategy; window >= W).
  SpeculativeDecoder(model::Generator g, SamplingOptions opts, std::shared_ptr<StaticBuffers> buffers);
  // Tokens [B,S] int64 (raster layout, on the model's device) for class ids [B] from `seed`; adds
  // its counts to *stats when given. The static and graph kinds keep their buffers (and captured
  // iteration) per row count and layout of settings from batch to batch, like DecodeEngine.
  torch::Tensor sample(const torch::Tensor& classes, uint64_t seed, SpeculativeStats* stats = nullptr);
  // The same for a batch of row groups with settings of their own (Sampler::sample_groups): each
  // group draws from its own generator, seeded with its seed. On the static and graph kinds every
  // image advances on its own, so a group's tokens are those it gets alone whenever the model
  // computes each row the same in either batch (always on the CPU in float32); on the plain kind
  // the batch advances by its slowest image.
  torch::Tensor sample_groups(const torch::Tensor& classes, const std::vector<RowGroup>& groups,
                              SpeculativeStats* stats = nullptr) override;
  EngineKind engine() const override { return kind_; }

 private:
  model::Generator g_;
  SamplingOptions opts_;
  EngineKind kind_;
  std::vector<int64_t> order_;
  std::shared_ptr<StaticBuffers> buffers_;  // static/graph kinds
  // static/graph kinds: the loop's buffers by row count and layout of the batch's settings (which
  // of guidance, temperature, top-k, top-p, greedy rows it has) — a captured iteration replays on
  // them (its graph is kept in the row count's StaticBuffers under the layout's name), so a
  // service alternating between requests of different layouts captures each once
  std::map<std::pair<int64_t, std::string>, std::shared_ptr<struct SpeculativeLoop>> loops_;
};

}  // namespace rar::sampling
