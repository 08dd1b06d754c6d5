// device.h — parsing the --device / --precision options every command shares.
#pragma once
#include <string>

#include <torch/types.h>

namespace rar {

// "cpu", "cuda" or "cuda:N"; fails clearly when CUDA is asked for but unavailable.
torch::Device parse_device(const std::string& s);
// "fp32" or "bf16" (also "fp16"). fp32 also turns TF32 matmuls off so results match the reference.
torch::ScalarType parse_precision(const std::string& s);

}  // namespace rar
