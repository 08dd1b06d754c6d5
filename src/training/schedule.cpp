// schedule.cpp — see schedule.h.
#include "training/schedule.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace rar::training {

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return base_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  if (kind == "constant") return base_lr;
  check(kind == "cosine", "lr_scheduler.scheduler: expected cosine or constant, got '", kind, "'");
  const double progress =
      static_cast<double>(step - warmup_steps) / static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double ratio = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  return end_lr + (base_lr - end_lr) * ratio;
}

double randomness(int64_t step, int64_t start, int64_t end) {
  if (step < start) return 1.0;
  if (step >= end) return 0.0;
  return 1.0 - static_cast<double>(step - start) / static_cast<double>(end - start);
}

}  // namespace rar::training
