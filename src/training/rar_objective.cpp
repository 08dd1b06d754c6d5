// rar_objective.cpp — see rar_objective.h.
#include "training/rar_objective.h"

#include <ATen/CPUGeneratorImpl.h>
#include <algorithm>
#include <torch/torch.h>

#include "util/error.h"

namespace rar::training {

ObjectiveDraws draw_objective(int64_t global_batch, int64_t first, int64_t count, const std::vector<int64_t>& scan,
                              double randomness, double label_dropout, uint64_t seed, int64_t step) {
  check(first >= 0 && count > 0 && first + count <= global_batch, "objective: rows out of the global batch");
  const int64_t S = static_cast<int64_t>(scan.size());
  ObjectiveDraws d;
  d.permuted = torch::empty({count}, torch::kBool);
  d.drop = torch::empty({count}, torch::kBool);
  d.orders = torch::empty({count, S}, torch::kInt64);
  // Written through raw pointers, with two generator calls per row into reused tensors: this runs
  // on the host before every step (a few hundred rows), where per-element tensor indexing cost
  // more than a small model's whole GPU step.
  bool* permuted = d.permuted.data_ptr<bool>();
  bool* drop = d.drop.data_ptr<bool>();
  int64_t* orders = d.orders.data_ptr<int64_t>();
  auto u = torch::empty({2}, torch::kFloat32);
  auto perm = torch::empty({S}, torch::kInt64);
  for (int64_t i = 0; i < count; ++i) {
    // One stream per (seed, step, row): a splitmix-style mix keeps nearby steps and rows unrelated.
    const uint64_t row = static_cast<uint64_t>(first + i);
    const uint64_t key = seed * 0x9E3779B97F4A7C15ULL ^ (static_cast<uint64_t>(step) * 0xBF58476D1CE4E5B9ULL) ^
                         ((row + 1) * 0x94D049BB133111EBULL);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(key);
    at::rand_out(u, {2}, gen);  // the values torch::rand({2}, gen) gives
    const float* uv = u.data_ptr<float>();
    permuted[i] = uv[0] < randomness;
    drop[i] = uv[1] < label_dropout;
    const int64_t* src = scan.data();
    if (permuted[i]) {
      at::randperm_out(perm, S, gen);
      src = perm.data_ptr<int64_t>();
    }
    std::copy(src, src + S, orders + i * S);
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
