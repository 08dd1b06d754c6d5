// rar_objective.cpp — see rar_objective.h.
#include "training/rar_objective.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "util/error.h"

namespace rar::training {

ObjectiveDraws draw_objective(int64_t global_batch, int64_t first, int64_t count, const std::vector<int64_t>& scan,
                              double randomness, double label_dropout, uint64_t seed, int64_t step) {
  check(first >= 0 && count > 0 && first + count <= global_batch, "objective: rows out of the global batch");
  const int64_t S = static_cast<int64_t>(scan.size());
  auto base = torch::tensor(scan, torch::kInt64);
  ObjectiveDraws d;
  d.permuted = torch::empty({count}, torch::kBool);
  d.drop = torch::empty({count}, torch::kBool);
  d.orders = torch::empty({count, S}, torch::kInt64);
  for (int64_t i = 0; i < count; ++i) {
    // One stream per (seed, step, row): a splitmix-style mix keeps nearby steps and rows unrelated.
    const uint64_t row = static_cast<uint64_t>(first + i);
    const uint64_t key = seed * 0x9E3779B97F4A7C15ULL ^ (static_cast<uint64_t>(step) * 0xBF58476D1CE4E5B9ULL) ^
                         ((row + 1) * 0x94D049BB133111EBULL);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(key);
    auto u = torch::rand({2}, gen);
    const bool permuted = u[0].item<float>() < randomness;
    d.permuted[i] = permuted;
    d.drop[i] = u[1].item<float>() < label_dropout;
    d.orders[i].copy_(permuted ? torch::randperm(S, gen, torch::kInt64) : base);
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
