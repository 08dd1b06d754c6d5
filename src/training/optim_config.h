// optim_config.h — the optimizer and learning-rate schedule of a trainer, read from the config
// sections every trainer shares (`optimizer.params.*`, `lr_scheduler.*`, `training.max_train_steps`),
// and the named parameters of a module as AdamW takes them.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "training/adamw.h"
#include "training/config.h"
#include "training/schedule.h"

namespace rar::training {

AdamWOptions adamw_options(const Config& cfg);  // fused ATen kernel; the plain path is its tested reference
LrSchedule lr_schedule(const Config& cfg);
std::vector<std::pair<std::string, torch::Tensor>> named_parameters(torch::nn::Module& m);

}  // namespace rar::training
