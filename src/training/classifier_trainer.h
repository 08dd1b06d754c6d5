// classifier_trainer.h — `rar train-classifier`: the small CNN of model/classifier.h trained with
// cross-entropy, AdamW (fused), warmup + cosine, random horizontal flips; test accuracy at the end.
#pragma once
#include <cstdint>
#include <string>

namespace rar::training {

struct ClassifierTrainOptions {
  std::string data, test = "auto", out = "classifier.safetensors", device = "auto";
  int64_t size = 0, pad = 0, steps = 2000, batch = 128, width = 32, log_every = 100;
  double lr = 2e-3, weight_decay = 0.05;
  bool flip = true;
  uint64_t seed = 0;
};

// Trains, saves to opts.out, and returns the test accuracy (or -1 without a test set).
double train_classifier(const ClassifierTrainOptions& opts);

}  // namespace rar::training
