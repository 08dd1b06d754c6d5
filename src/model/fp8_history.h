// fp8_history.h — delayed fp8 scaling's state (`training.fp8_scaling: delayed`; model/ops/fp8.h):
// for every fp8 operand of the blocks (kPerBlock a block: qkv's and proj's three, the MLP's six,
// the adaLN's five), the largest magnitude it had in each of the last `length` steps — their max
// scales it in the next step, so no pass over a tensor precedes its cast — and this step's record,
// which its casts max as they convert. The step's last backward done, advance() turns the records
// into the history's newest step. Until every operand's history holds a magnitude above zero, the
// casts scale by their own magnitudes (current scaling) and record them: with the published
// initialisation (zero adaLN outputs) the first step's adaLN weights and the branches' output
// gradients are all zeros, and a zero magnitude would scale the next step's values, no longer
// zero, onto the format's edge (a scale of 448/1e-30). A checkpoint keeps the history
// (state/load), so a resumed run continues exactly; data-parallel ranks take the max of their
// records before advancing, so every rank scales alike and N processes train as one accumulating.
#pragma once
#include <memory>
#include <string>

#include <torch/torch.h>

#include "model/ops/fp8.h"

namespace rar::model {

class Fp8History {
 public:
  // A block's rows: qkv, proj (a linear's operands each), the MLP, the adaLN products.
  static constexpr int64_t kQkv = 0, kProj = kQkv + kFp8LinearOperands, kMlp = kProj + kFp8LinearOperands,
                           kAdaln = kMlp + kFp8MlpOperands, kPerBlock = kAdaln + kFp8AdalnOperands;
  // The steps it looks back over unless told otherwise (training.fp8_amax_history, rar bench train).
  static constexpr int64_t kDefaultLength = 16;

  Fp8History(int64_t blocks, int64_t length);
  int64_t operands() const { return history_.size(0); }
  int64_t length() const { return history_.size(1); }

  // The rows [first, first + n) as an op's scaling, on `device` (the history moves there at the
  // first call from another device; before any step, so a captured step sees fixed addresses).
  Fp8Scaling scaling(int64_t first, int64_t n, const torch::Device& device);
  // Whether every operand's history holds a magnitude above zero (else the casts scale by their own
  // magnitudes, recording them). Decided at advance() (a host read of the scales until it holds).
  bool primed() const { return primed_; }
  // Whether the history holds a step (what a checkpoint keeps).
  bool holds_step() const { return holds_step_; }
  // This step's records [operands], float32 on the history's device: a view to max across ranks in place.
  torch::Tensor records() { return slots_.select(1, 1); }
  // After a step's last backward (and the ranks' max): the records become the newest step, each
  // operand's scale the max over the history, the records zero. A non-finite record enters as the
  // operand's previous scale: one overflowing step does not decide the scales of the next ones.
  // Device ops only, but for one host read of the scales a step until primed().
  void advance();
  // The history [operands, length] (newest step first; float32, CPU) for a checkpoint, and back.
  torch::Tensor state() const;
  // `what` names the source in the error when the shape differs from this history's.
  void load(const torch::Tensor& history, const std::string& what);

 private:
  torch::Tensor slots_;    // [operands, 2]: the magnitude to scale by, this step's record
  torch::Tensor history_;  // [operands, length]
  bool primed_ = false, holds_step_ = false;
  void update_primed();
};

// Where a module's fp8 operands are in the history (GeneratorImpl::use_fp8 sets them): none
// without delayed scaling.
struct Fp8Rows {
  std::shared_ptr<Fp8History> history;
  int64_t first = 0;
  // Rows [first + offset, + n) as an op's scaling on `device`; current scaling without a history.
  Fp8Scaling at(int64_t offset, int64_t n, const torch::Device& device) const;
  // An op's fp8 mode: off unless `on`, else on with those rows as its scaling.
  Fp8Mode mode(bool on, int64_t offset, int64_t n, const torch::Device& device) const {
    return on ? Fp8Mode{true, at(offset, n, device)} : Fp8Mode{};
  }
};

}  // namespace rar::model
