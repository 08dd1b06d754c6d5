// nll.h — per-sample negative log-likelihood of token sequences under a generator (DESIGN §3.8):
// the mean cross-entropy, in nats per token, of predicting x[τ_{j+1}] at position j.
// Used as validation loss and as the equivalence test against the reference code.
#pragma once
#include <torch/types.h>

#include "model/generator.h"

namespace rar::eval {

// tokens [N,S] int64, classes [N] int64 (ignored when null_class), orders [N,S] or undefined.
// Runs in chunks of `batch` on the model's device. Returns float64 [N] on CPU.
torch::Tensor sequence_nll(model::Generator& g, const torch::Tensor& tokens, const torch::Tensor& classes,
                           const torch::Tensor& orders, bool null_class, int64_t batch = 64);

// Checks tokens/classes/orders against the model config; throws naming the offending input.
void validate_score_inputs(const model::GeneratorConfig& cfg, const torch::Tensor& tokens,
                           const torch::Tensor& classes, const torch::Tensor& orders);

}  // namespace rar::eval
