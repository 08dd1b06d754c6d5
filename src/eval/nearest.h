// nearest.h — a memorisation check for generators trained on small datasets: how close each sample
// lies to its nearest training image (pixel space, L2 over images scaled to [0, 1]), against how
// close unseen real images (a held-out split) lie to theirs. A model that copies its training set
// puts many samples closer to a training image than almost any unseen image gets.
#pragma once
#include <torch/types.h>

#include "data/prepare.h"

namespace rar::eval {

// Images [0, n) of `images` (n <= 0: all) as float rows [n, C·H·W] in [0, 1].
torch::Tensor pixel_rows(const data::ImageBatches& images, int64_t n);

// For each row of `query` [N,D], the L2 distance to its nearest row of `base` [M,D] (same D):
// [N] float64, on the CPU. Computed on `device` in chunks of `chunk` queries (|q|² + |b|² - 2q·b in
// float32, clamped at 0; the minimum's distance recomputed exactly in float64).
torch::Tensor nearest_distances(const torch::Tensor& query, const torch::Tensor& base, const torch::Device& device,
                                int64_t chunk = 1024);

struct CopyReport {
  double sample_median = 0, heldout_median = 0;
  double threshold = 0;  // the `quantile` of the held-out images' distances
  double copies = 0;     // share of samples nearer than the threshold
};
// sample_d, heldout_d: nearest-training-image distances of the samples and of held-out real images.
// A model that does not copy puts about `quantile` of its samples under the threshold.
CopyReport copy_report(const torch::Tensor& sample_d, const torch::Tensor& heldout_d, double quantile = 0.01);

}  // namespace rar::eval
