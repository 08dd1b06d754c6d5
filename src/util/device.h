// device.h — parsing the --device / --precision options every command shares.
#pragma once
#include <string>

#include <torch/types.h>

namespace rar {

// "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"; fails clearly when CUDA is
// asked for but unavailable.
torch::Device parse_device(const std::string& s);
// Makes an indexed CUDA device this thread's current device (no-op otherwise). Work launched on the
// current stream - CUDA graph captures, cuBLAS handles - goes to the current device, so a process
// computing on cuda:N must make it current.
void use_device(const torch::Device& d);
// "fp32", "tf32", "bf16" or "fp16". fp32 turns TF32 matmuls off (exact comparisons); tf32 keeps
// float32 tensors but lets CUDA matmuls/convolutions use TF32 tensor cores.
torch::ScalarType parse_precision(const std::string& s);
// The generator precision `rar sample` and `rar serve` share by default ("auto"): bf16 weights on
// a CUDA device (the speed the tables measure; the images differ from fp32 by rounding only),
// fp32 on the CPU (where bf16 is slow and the exactness with the published code is tested).
// Any other value is returned as given.
std::string resolve_precision(const std::string& s, const torch::Device& device);
// --decode-precision (the VQ decoder of rar sample and rar serve, the same rule so that both give
// the same images): "auto" -> bf16 on CUDA, fp32 on the CPU; else fp32 or bf16 (a one-line error
// otherwise). Returns the resolved name.
std::string resolve_decode_precision(const std::string& s, const torch::Device& device);

}  // namespace rar
