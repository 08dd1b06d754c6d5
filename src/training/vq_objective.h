// vq_objective.h — the tokenizer's training objective (the loss of tokenizer_trainer.h):
//   z = E(x)  (l2-normalised when use_l2_norm);  k = argmin_j |z − e_j|²;  z_q = e_k
//   loss = w_rec · rec(D(z + sg(z_q − z)), x)        straight-through: the decoder's gradient reaches E
//        + w_cb  · |sg(z) − z_q|²                     moves the codes toward the encoder outputs
//        + β     · |z − sg(z_q)|²                     keeps the encoder near its codes
// with rec = L1, L2 or their sum; and the code-usage bookkeeping that restarts dead codes.
#pragma once
#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "model/vqgan.h"
#include "training/adamw.h"

namespace rar::training {

struct VqLossWeights {
  std::string reconstruction = "l1+l2";  // l1 | l2 | l1+l2
  double reconstruction_weight = 1.0, codebook_weight = 1.0, commitment = 0.25;
  void validate() const;  // a one-line error for an unknown reconstruction kind
};

// The encoder's outputs as the quantizer compares them: one row per grid position.
struct Encoded {
  torch::Tensor z_flat;  // [N·h·w, D] float32, rows in (n, y, x) order
  int64_t n = 0, h = 0, w = 0;
};
// z = E(x) for images x [N,C,H,W] in [0,1] (the encoder under bf16 autocast when asked).
Encoded vq_encode(model::VQModel& vq, const torch::Tensor& x, bool autocast);

// Starts the codebook on encoder outputs: K rows of z_flat drawn at random, plus 0.01·N(0,1).
void init_codebook(model::VQModel& vq, const torch::Tensor& z_flat);

struct VqLoss {
  torch::Tensor loss;                                        // the weighted sum (scalar, with gradients)
  torch::Tensor reconstruction, codebook, commitment, mse;   // its terms, and the pixel MSE (for PSNR)
  torch::Tensor codes;                                       // [N·h·w] int64: each position's code
};
// The objective on encoder outputs z of images x.
VqLoss vq_loss(model::VQModel& vq, const Encoded& z, const torch::Tensor& x, const VqLossWeights& w, bool autocast);

// Each code's share of the positions, as an exponential moving average; codes whose share
// falls below threshold / K are restarted on encoder outputs of the current batch (their
// optimizer moments cleared).
class CodeUsage {
 public:
  CodeUsage(int64_t codes, double decay, const torch::Device& device);
  torch::Tensor add(const torch::Tensor& codes);  // one batch's codes; returns their counts [K]
  // Restarts the dead codes; returns how many.
  int64_t restart_dead(model::VQModel& vq, AdamW& opt, const torch::Tensor& z_flat, double threshold);
  torch::Tensor& shares() { return shares_; }

 private:
  int64_t K_;
  double decay_;
  torch::Tensor shares_;  // [K] float32
};

}  // namespace rar::training
