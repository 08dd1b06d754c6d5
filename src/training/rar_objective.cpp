// rar_objective.cpp — see rar_objective.h.
#include "training/rar_objective.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "util/error.h"

namespace rar::training {

ObjectiveDraws draw_objective(int64_t global_batch, int64_t first, int64_t count, const std::vector<int64_t>& scan,
                              double randomness, double label_dropout, uint64_t seed, int64_t step, int64_t micro) {
  check(first >= 0 && count > 0 && first + count <= global_batch, "objective: rows out of the global batch");
  const int64_t S = static_cast<int64_t>(scan.size());
  // One stream per (seed, step, micro-step): a splitmix-style mix keeps nearby steps unrelated.
  uint64_t key = seed * 0x9E3779B97F4A7C15ULL ^ (static_cast<uint64_t>(step) * 0xBF58476D1CE4E5B9ULL) ^
                 (static_cast<uint64_t>(micro) * 0x94D049BB133111EBULL);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(key);
  auto coins = torch::rand({global_batch}, gen);
  auto drops = torch::rand({global_batch}, gen);
  auto base = torch::tensor(scan, torch::kInt64);
  ObjectiveDraws d;
  d.permuted = coins.lt(randomness).narrow(0, first, count).clone();
  d.drop = drops.lt(label_dropout).narrow(0, first, count).clone();
  d.orders = torch::empty({count, S}, torch::kInt64);
  // Every sample's permutation is drawn (used or not), so a row's draw does not depend on others.
  for (int64_t b = 0; b < global_batch; ++b) {
    auto perm = torch::randperm(S, gen, torch::kInt64);
    if (b < first || b >= first + count) continue;
    d.orders[b - first].copy_(coins[b].item<float>() < randomness ? perm : base);
  }
  return d;
}

LossAndAccuracy next_token_loss(const torch::Tensor& logits, const torch::Tensor& tokens, const torch::Tensor& orders) {
  const int64_t B = tokens.size(0), S = tokens.size(1);
  auto targets = tokens.gather(1, orders);                         // x[τ_1..τ_S]
  auto pred = logits.narrow(1, 0, S).reshape({B * S, -1}).to(torch::kFloat32);  // position j predicts x[τ_{j+1}]
  LossAndAccuracy out;
  out.loss = torch::nn::functional::cross_entropy(pred, targets.reshape({-1}));
  out.correct = pred.argmax(1).eq(targets.reshape({-1})).sum();
  return out;
}

}  // namespace rar::training
