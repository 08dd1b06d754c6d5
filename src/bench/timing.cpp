// timing.cpp — see timing.h.
#include "bench/timing.h"

#include <chrono>
#include <cstdio>

#include <torch/cuda.h>

namespace rar::bench {

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

double seconds_per_run(const torch::Device& device, int64_t repeats, const std::function<void()>& work) {
  work();  // warm-up
  synchronize(device);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < repeats; ++i) work();
  synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(repeats);
}

std::string fixed1(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

std::string of_bf16_peak(double tflops, const torch::Device& device) {
  if (!device.is_cuda()) return "-";
  return std::to_string(static_cast<int>(100 * tflops / kBf16PeakTflops + 0.5)) + "%";
}

}  // namespace rar::bench
