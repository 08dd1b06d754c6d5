// init.h — weight initialisers shared by the models (the RAR recipe, DESIGN §4 "Init").
#pragma once
#include <torch/types.h>

namespace rar::model {

// PyTorch's nn.init.trunc_normal_: normal(mean, std) truncated to the absolute range [a, b],
// drawn by inverse-CDF sampling exactly as PyTorch does.
void trunc_normal_(torch::Tensor t, double mean = 0.0, double std = 0.02, double a = -2.0, double b = 2.0);

}  // namespace rar::model
