// guidance.h — classifier-free guidance (DESIGN §5): logits = u + (c - u) * g_t, with the scale
// g_t following a schedule over the S steps:
//   pow-cosine (reference)  g_t = (g - 1) * (1 - cos(π (t/S)^p)) / 2 + 1, with 0^0 = 1
//   linear                  g_t = 1 + (g - 1) * t / S
//   constant                g_t = g
// g = 0 disables guidance altogether (one forward per step instead of two).
#pragma once
#include <cstdint>
#include <string>

#include <torch/types.h>

namespace rar::sampling {

enum class GuidanceSchedule { PowCosine, Linear, Constant };

GuidanceSchedule parse_guidance_schedule(const std::string& s);
// Evaluated in float32 like the reference code, so greedy paths match it bit for bit.
float guidance_scale_at(int64_t step, int64_t steps, double scale, double power, GuidanceSchedule schedule);
// cond, uncond [B,V] -> guided logits [B,V], with a scale per row: scale [B,1] float32.
torch::Tensor apply_guidance(const torch::Tensor& cond, const torch::Tensor& uncond, const torch::Tensor& scale);

}  // namespace rar::sampling
