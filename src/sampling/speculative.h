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
// p), new ones beyond the window uniformly. A batch advances by its slowest image's count.
//
// It draws other random numbers than Sampler::sample_batch: the same distribution, not the same
// tokens for a seed. Steps run on the plain path (the KV cache rewound to the kept tokens).
#pragma once
#include <cstdint>

#include <torch/torch.h>

#include "model/generator.h"
#include "sampling/sampler.h"

namespace rar::sampling {

// Tokens [B,S] int64 (raster layout, on the model's device) for class ids [B], drawn with `opts`
// (guidance, its schedule, temperature, top-k, top-p, scan order, steps, KV cache dtype; the engine
// is not used) from `seed`, W = window >= 1 positions per call. Adds its counts to *stats (SpeculativeStats,
// sampling/sampler.h) when given.
torch::Tensor sample_speculative(model::GeneratorImpl& g, const torch::Tensor& classes, const SamplingOptions& opts,
                                 int64_t window, uint64_t seed, SpeculativeStats* stats = nullptr);

}  // namespace rar::sampling
