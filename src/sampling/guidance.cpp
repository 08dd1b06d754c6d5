#include "sampling/guidance.h"

#include <cmath>

#include "util/error.h"

namespace rar::sampling {

GuidanceSchedule parse_guidance_schedule(const std::string& s) {
  if (s == "pow-cosine") return GuidanceSchedule::PowCosine;
  if (s == "linear") return GuidanceSchedule::Linear;
  if (s == "constant") return GuidanceSchedule::Constant;
  fail("--cfg-schedule: expected pow-cosine, linear or constant, got '", s, "'");
}

float guidance_scale_at(int64_t step, int64_t steps, double scale, double power, GuidanceSchedule schedule) {
  const float g = static_cast<float>(scale);
  switch (schedule) {
    case GuidanceSchedule::Constant: return g;
    case GuidanceSchedule::Linear: return 1.0f + (g - 1.0f) * static_cast<float>(step) / static_cast<float>(steps);
    case GuidanceSchedule::PowCosine: {
      float ratio = std::pow(static_cast<float>(static_cast<double>(step) / steps), static_cast<float>(power));
      float s = (1.0f - std::cos(ratio * static_cast<float>(M_PI))) * 0.5f;
      return (g - 1.0f) * s + 1.0f;
    }
  }
  return g;
}

torch::Tensor apply_guidance(const torch::Tensor& cond, const torch::Tensor& uncond, const torch::Tensor& scale) {
  return uncond + (cond - uncond) * scale;
}

}  // namespace rar::sampling
