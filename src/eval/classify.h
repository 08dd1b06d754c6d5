// classify.h — sample quality with a dataset-specific classifier (model/classifier.h): the share of
// samples recognised as their conditioning class, and the Fréchet distance between classifier
// features of samples and of real images ("feature-FID"; eval/fid.h does the math).
#pragma once
#include <string>

#include <torch/types.h>

#include "data/prepare.h"
#include "model/classifier.h"

namespace rar::eval {

struct ClassifierOutputs {
  torch::Tensor features, predictions, labels;  // [N,F] float, [N] int64, [N] int64
};
// Runs the classifier over images [0, n) of `images` (n <= 0: all), in batches.
ClassifierOutputs classify_images(model::Classifier& c, const data::ImageBatches& images, int64_t n, int64_t batch,
                                  const torch::Device& device);

double accuracy(const ClassifierOutputs& o);

}  // namespace rar::eval
