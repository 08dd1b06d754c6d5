// schedule.h — the step-dependent quantities of the recipe (DESIGN §4).
// `step` counts optimizer updates already taken, so the first update runs at step 0 — as
// PyTorch's LambdaLR, which sets lr = base · λ(0) before the first optimizer.step().
#pragma once
#include <cstdint>
#include <string>

namespace rar::training {

struct LrSchedule {
  std::string kind = "cosine";  // "cosine" (warmup then half-cosine to end_lr) or "constant" (warmup then base)
  double base_lr = 4e-4, end_lr = 1e-5;
  int64_t warmup_steps = 0, total_steps = 1;
  // Linear warmup from 0: base·step/warmup; then end + (base − end)·max(0, ½(1 + cos(π·progress))),
  // progress = (step − warmup)/(total − warmup) — the published get_cosine_schedule_with_warmup.
  double at(int64_t step) const;
};

// Randomness r(step) of the permutation objective: 1 before `start`, 0 from `end` on, linear
// between (1 − (step − start)/(end − start)).
double randomness(int64_t step, int64_t start, int64_t end);

}  // namespace rar::training
