// optim_config.cpp — see optim_config.h.
#include "training/optim_config.h"

#include "util/error.h"

namespace rar::training {

AdamWOptions adamw_options(const Config& cfg) {
  AdamWOptions ao;
  ao.beta1 = cfg.get_double("optimizer.params.beta1");
  ao.beta2 = cfg.get_double("optimizer.params.beta2");
  ao.weight_decay = cfg.get_double("optimizer.params.weight_decay");
  // get_double already refuses NaN and infinities; these ranges keep AdamW's update finite.
  check(ao.beta1 >= 0 && ao.beta1 < 1 && ao.beta2 >= 0 && ao.beta2 < 1, cfg.source,
        ": optimizer.params.beta1/beta2 must lie in [0, 1), got ", ao.beta1, " / ", ao.beta2);
  check(ao.weight_decay >= 0, cfg.source, ": optimizer.params.weight_decay must be >= 0, got ", ao.weight_decay);
  ao.fused = true;
  return ao;
}

LrSchedule lr_schedule(const Config& cfg) {
  LrSchedule s;
  s.kind = cfg.get_string("lr_scheduler.scheduler");
  s.base_lr = cfg.get_double("lr_scheduler.params.learning_rate");
  s.end_lr = cfg.get_double("lr_scheduler.params.end_lr");
  s.warmup_steps = cfg.get_int("lr_scheduler.params.warmup_steps");
  s.total_steps = cfg.get_int("training.max_train_steps");
  check(s.total_steps > 0, "training.max_train_steps must be positive");
  check(s.base_lr >= 0 && s.end_lr >= 0, cfg.source, ": learning rates must be >= 0, got learning_rate ", s.base_lr,
        ", end_lr ", s.end_lr);
  check(s.warmup_steps >= 0, cfg.source, ": lr_scheduler.params.warmup_steps must be >= 0, got ", s.warmup_steps);
  return s;
}

std::vector<std::pair<std::string, torch::Tensor>> named_parameters(torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : m.named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace rar::training
