// profile.h — a kernel-time breakdown of a piece of work through LibTorch's profiler (Kineto):
// device kernels grouped by name, with their share of the total and coarse categories (matrix
// products, attention, everything else), for `rar bench ... --profile`.
#pragma once
#include <functional>
#include <string>

namespace rar {

// Runs `work` under the profiler and prints the top `top` kernels (by total time) on `device_cuda`
// (CUDA kernels when true, CPU operators otherwise). Saves a Chrome trace to `trace` when not empty.
void profile_kernels(const std::function<void()>& work, bool device_cuda, int top, const std::string& trace = "");

}  // namespace rar
