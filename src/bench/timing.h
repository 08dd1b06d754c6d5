// timing.h — what every benchmark of `rar bench` shares: timing a piece of work on a device
// (one warm-up, then the mean of `repeats` runs, the device synchronised around them), the bf16
// roofline the tables compare with, and the number formatting of their rows.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include <torch/types.h>

namespace rar::bench {

// Dense bf16 tensor-core peak of an H100/H200 SXM (TFLOP/s): the roofline the tables compare with.
constexpr double kBf16PeakTflops = 989.0;

void synchronize(const torch::Device& device);
// Seconds per run of `work`: one warm-up run, then `repeats` runs timed together.
double seconds_per_run(const torch::Device& device, int64_t repeats, const std::function<void()>& work);
// "12.3" (one decimal), and "37%" of the bf16 peak for TFLOP/s on a GPU ("-" on the CPU).
std::string fixed1(double v);
std::string of_bf16_peak(double tflops, const torch::Device& device);

}  // namespace rar::bench
