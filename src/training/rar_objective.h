// rar_objective.h — the RAR training objective (DESIGN §4, paper §3.2):
//   r(step) = randomness annealing (training/schedule.h);
//   each sample independently takes a uniformly random permutation τ with probability r, else
//   the scan order (raster for the published models);
//   the class label is replaced by the null class with probability `label_dropout`;
//   loss = mean cross-entropy of predicting x[τ_{j+1}] at position j, j = 0..S-1 (DESIGN §3.8).
// The generator's forward adds the target-aware positions for whatever τ it is given.
//
// Draws come from a CPU generator seeded per (seed, step, micro-step), for the whole global batch,
// so they do not depend on the RNG history (resume is exact) nor on how the batch is split
// across ranks (data-parallel runs draw what a single process would).
#pragma once
#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace rar::training {

struct ObjectiveDraws {
  torch::Tensor orders;     // int64 [B,S]: a permutation per sample
  torch::Tensor permuted;   // bool [B]: true where the order was drawn at random
  torch::Tensor drop;       // bool [B]: true where the label is dropped to the null class
};

// Draws for rows [first, first + count) of a step's global batch of `global_batch` samples (all
// micro-steps of all ranks: row = micro * ranks * per-rank batch + rank * per-rank batch + i). Each
// row's coin, label drop and permutation come from its own stream keyed by (seed, step, row), so a
// row's draw is the same however the global batch is split over processes and accumulation steps.
ObjectiveDraws draw_objective(int64_t global_batch, int64_t first, int64_t count, const std::vector<int64_t>& scan,
                              double randomness, double label_dropout, uint64_t seed, int64_t step);

struct LossAndAccuracy {
  torch::Tensor loss;      // scalar, mean cross-entropy (float32)
  torch::Tensor correct;   // scalar int64, argmax hits
};
// logits [B,S+1,V] from Generator::forward; tokens [B,S] raster layout; orders [B,S].
LossAndAccuracy next_token_loss(const torch::Tensor& logits, const torch::Tensor& tokens, const torch::Tensor& orders);

}  // namespace rar::training
