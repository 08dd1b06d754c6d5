#include "util/device.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/torch.h>

#include "util/error.h"

namespace rar {

torch::Device parse_device(const std::string& s) {
  if (s == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  check(s == "cpu" || s.rfind("cuda", 0) == 0, "--device: expected auto, cpu, cuda or cuda:N, got '", s, "'");
  if (s == "cpu") return torch::kCPU;
  check(torch::cuda::is_available(), "--device ", s, ": CUDA is not available in this build or on this machine");
  torch::Device d(s);
  check(!d.has_index() || d.index() < static_cast<int>(torch::cuda::device_count()), "--device ", s,
        ": no such GPU (", torch::cuda::device_count(), " visible)");
  use_device(d);
  return d;
}

void use_device(const torch::Device& d) {
  if (d.is_cuda() && d.has_index()) c10::impl::getDeviceGuardImpl(d.type())->setDevice(d);
}

std::string resolve_precision(const std::string& s, const torch::Device& device) {
  if (s != "auto") return s;
  return device.is_cuda() ? "bf16" : "fp32";
}

std::string resolve_decode_precision(const std::string& s, const torch::Device& device) {
  check(s == "auto" || s == "fp32" || s == "bf16", "--decode-precision: expected auto, fp32 or bf16, got '", s, "'");
  return resolve_precision(s, device);
}

torch::ScalarType parse_precision(const std::string& s) {
  if (s == "fp32") {
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
    return torch::kFloat32;
  }
  if (s == "tf32") {  // fp32 storage, TF32 tensor-core matmuls (the reference code's sampling setting)
    at::globalContext().setAllowTF32CuBLAS(true);
    at::globalContext().setAllowTF32CuDNN(true);
    return torch::kFloat32;
  }
  if (s == "bf16") return torch::kBFloat16;
  if (s == "fp16") return torch::kFloat16;
  fail("--precision: expected fp32, tf32, bf16 or fp16, got '", s, "'");
}

}  // namespace rar
