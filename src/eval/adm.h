// adm.h — the five numbers of guided-diffusion's evaluator (evaluations/evaluator.py), which the
// RAR paper's tables report: Inception Score, FID, sFID, Precision and Recall, computed as the
// evaluator computes them.
//   Network: the published Inception graph (pytorch-fid's weights are the same network) on its own
//   preprocessing — images in [0, 255] resized to 299x299 by TensorFlow's legacy bilinear resize
//   (no half-pixel offset), then (x − 128)/128 (the graph's Sub and Mul).
//   Features: pool_3 (2048-d) for FID, IS, Precision and Recall; the first 7 channels of
//   mixed_6/conv, 17x17x7 flattened in the graph's NHWC order (2023-d), for sFID.
//   FID / sFID: the Fréchet distance of the features' float64 mean and covariance (a reference
//   batch that holds mu, sigma, mu_s, sigma_s gives its own).
//   IS: softmax(pool_3 · W) with the weight of `softmax/logits/MatMul` and no bias, over splits of
//   5000 (a short last split counts as one), the mean of the splits' scores.
//   Precision / Recall (k = 3): a vector's radius is its squared distance to its 3rd nearest
//   neighbour (itself excluded) among its own set; precision = the share of samples within some
//   reference vector's radius, recall = the share of reference vectors within some sample's.
//   Squared distances as the evaluator's block computes them: in fp16 (|u|² − 2u·v + |v|²,
//   clamped at 0), in fp32 for a block whose fp16 values do not stay finite.
#pragma once
#include <utility>

#include <torch/types.h>

#include "eval/inception.h"

namespace rar::eval {

// TensorFlow's ResizeBilinear with align_corners=False, half_pixel_centers=False: source
// coordinate = destination index · in/out (float32), neighbours floor and min(ceil, in−1).
// float NHWC [N,H,W,C] -> float32 [N,size,size,C].
torch::Tensor tf_resize_bilinear(const torch::Tensor& nhwc, int64_t size);

struct AdmActivations {
  torch::Tensor pool, spatial;  // float32 [N,2048], [N,2023]
};
// uint8 images [N,H,W,3] (any size) through the network on its device.
AdmActivations adm_activations(FidInception& net, const torch::Tensor& images);

// The evaluator's squared distances between the rows of u [M,D] and v [K,D]: [M,K] float32.
torch::Tensor adm_squared_distances(const torch::Tensor& u, const torch::Tensor& v);
// Every row's radius (squared distance to its k-th nearest neighbour, itself excluded): [N] float32,
// on the features' device.
torch::Tensor manifold_radii(const torch::Tensor& features, int64_t k = 3);
// (precision, recall) of `samples` against `reference` (float32 features), k = 3, the distances
// computed on `device` in blocks (50,000 samples are 2.5·10⁹ distances to the samples' own 3rd
// neighbours: the GPU's work when there is one).
std::pair<double, double> adm_precision_recall(const torch::Tensor& reference, const torch::Tensor& samples, int64_t k = 3,
                                               const torch::Device& device = torch::kCPU);
// IS of pool features [N,D] with the softmax weight [D,K] (float32, as the evaluator).
double adm_inception_score(const torch::Tensor& pool, const torch::Tensor& softmax_weight, int64_t split = 5000);

}  // namespace rar::eval
