// checkpoints.h — training checkpoints: one folder per saved step under <out>/checkpoints/,
//   step-00001000/model.safetensors      the weights (with the model config in the metadata)
//                 optimizer.safetensors  optimizer moments, RNG states, trainer tensors
//                 trainer.json           step, data position and other scalar state
//                 config.yaml            the effective config
// A folder is written under a temporary name and renamed into place, so a checkpoint is either
// complete or absent; the oldest are removed beyond keep-last-K.
#pragma once
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "io/state_dict.h"
#include "training/config.h"

namespace rar::training {

struct TrainCheckpoint {
  io::StateDict model, optimizer;
  nlohmann::json state = nlohmann::json::object();
  std::string config_yaml;
};

// Writes <root>/step-<step>/ atomically and prunes to the newest `keep_last` (0 = keep all).
// Returns the folder's path.
std::string save_checkpoint(const std::string& root, int64_t step, const TrainCheckpoint& ckpt, int64_t keep_last);
// The newest complete checkpoint folder under `root`, or "" when there is none.
std::string latest_checkpoint(const std::string& root);
TrainCheckpoint load_checkpoint(const std::string& dir);

// Fails (naming the step and the tensor) when a floating-point weight is NaN or infinite: called
// before anything is saved, so a diverged run never overwrites good weights.
void check_finite_weights(const io::StateDict& sd, int64_t step);
// Before resuming from the checkpoint folder `dir`: its config.yaml must agree with `current` on
// every key that changes what is computed (model, optimizer, schedule, data order, batch, seed);
// keys that only steer the run (time budget, logging and saving intervals, device, paths) may
// change. Fails listing the differences.
void check_resume_config(const std::string& dir, const Config& current, const std::set<std::string>& job_checked = {});
// A run without --resume must not write into a folder that holds another run's checkpoints.
void check_fresh_output(const std::string& root, bool resume);

// The default generators' states (CPU, and the CUDA device's when `cuda_device` >= 0) as tensors
// "rng.cpu" / "rng.cuda", and back.
void save_rng_states(io::StateDict& sd, int cuda_device = -1);
void load_rng_states(const io::StateDict& sd, int cuda_device = -1);

}  // namespace rar::training
