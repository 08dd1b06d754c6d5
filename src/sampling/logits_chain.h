// logits_chain.h — turning next-token logits into a token, as a chain of small stages each
// testable alone (temperature -> top-k -> top-p -> draw). All take and return [B,V] float32.
#pragma once
#include <ATen/core/Generator.h>
#include <torch/types.h>

namespace rar::sampling {

torch::Tensor apply_temperature(const torch::Tensor& logits, double temperature);
// Keeps the k largest logits per row (ties at the k-th value are kept); k <= 0 keeps all.
torch::Tensor apply_top_k(const torch::Tensor& logits, int64_t k);
// Keeps the smallest set of tokens whose probability reaches p (always at least the best one).
torch::Tensor apply_top_p(const torch::Tensor& logits, double p);
// One token per row from softmax(logits), using `gen` — [B] int64.
torch::Tensor draw(const torch::Tensor& logits, at::Generator& gen);

// A seeded generator on `device` (CPU, or CUDA in the CUDA build).
at::Generator make_generator(const torch::Device& device, uint64_t seed);

}  // namespace rar::sampling
