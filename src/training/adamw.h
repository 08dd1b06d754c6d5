// adamw.h — AdamW (decoupled weight decay) over named parameters, in decay groups.
//
// The plain path is PyTorch's single-tensor AdamW, operation for operation:
//   p ← p·(1 − lr·wd);  m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²
//   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
// The fused path calls ATen's `_fused_adamw_` (one kernel per group; CUDA and CPU) and is tested
// against the plain one. State (step, m, v per parameter name) saves to and loads from a StateDict.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "io/state_dict.h"

namespace rar::training {

// The published no-decay rule (DESIGN §4): parameters with fewer than 2 dims, or whose name contains
// any of ln, bias, latent_tokens, mask_token, embedding, norm, gamma, embed, get no weight decay.
bool published_no_decay(const std::string& name, const torch::Tensor& p);

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  bool fused = false;
};

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, AdamWOptions opt,
        const std::function<bool(const std::string&, const torch::Tensor&)>& no_decay = published_no_decay);

  // One update of every parameter with a gradient, at learning rate `lr`.
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return step_; }
  const AdamWOptions& options() const { return opt_; }
  // Names of the parameters that get weight decay / none (for logs and tests).
  std::vector<std::string> decayed() const;
  std::vector<std::string> not_decayed() const;

  // "step" and "exp_avg.<name>", "exp_avg_sq.<name>" (float32, CPU copies).
  io::StateDict state() const;
  // Restores state saved by state(); every parameter's moments must be present with its shape.
  void load_state(const io::StateDict& sd);
  // Every state tensor on the parameters' devices (each slot's exp_avg, exp_avg_sq and step, in a
  // fixed order), for sending the state between processes; with steps() it is the whole state.
  std::vector<torch::Tensor> state_tensors() const;
  void set_steps(int64_t steps) { step_ = steps; }
  // Zeroes the moments of rows `rows` of `param` (used when codebook entries are restarted).
  void reset_rows(const torch::Tensor& param, const torch::Tensor& rows);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq, step;  // step: float scalar on the device (fused path)
    bool decay;
  };
  std::vector<Slot> slots_;
  AdamWOptions opt_;
  int64_t step_ = 0;
};

// Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_ semantics, 2-norm over all
// gradients). Returns the norm before clipping.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);
// The same, leaving the norm on the gradients' device (no host synchronisation).
torch::Tensor clip_grad_norm_(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace rar::training
