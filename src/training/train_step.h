// train_step.h — one training step's gradients for the generator: a micro-batch's forward and
// backward (forward_backward), and the whole step of one batch — forward, backward, clipping —
// as GradientStep, run eagerly or captured once in a CUDA graph and replayed.
//
// A captured step launches the same kernels on the same buffers at every replay: the batch is
// copied into fixed input buffers first, the gradients are written into the same .grad tensors,
// and the dropout masks are new at every replay (graph-safe Philox offsets of the default CUDA
// generator, which advance exactly as the eager step's draws would: an eager and a captured step
// from the same generator state give the same gradients, bit for bit). What it needs: a CUDA
// device, a fixed batch shape, one micro-batch per step on one process (no accumulation, no
// gradient all-reduce), and no recomputed blocks (their recomputation restores the generator's
// state, which a capture cannot do).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/generator.h"
#include "training/rar_objective.h"

namespace rar::gpu {
class StepGraph;
}

namespace rar::training {

// One micro-batch: condition tokens (with the drawn label drops), forward in the drawn orders
// (bf16 autocast when asked), next-token loss, backward of loss·grad_scale. tokens/labels on the
// model's device; draws anywhere (moved to the device).
LossAndAccuracy forward_backward(model::Generator& g, const torch::Tensor& tokens, const torch::Tensor& labels,
                                 const ObjectiveDraws& draws, bool autocast, double grad_scale);

// Why a step of `g` on `device` cannot be captured ("" when it can), beside the caller's own
// conditions (one process, no accumulation).
std::string graph_unavailable(const model::Generator& g, const torch::Device& device);

// A step's numbers on the device: one float64 tensor, so that ranks agree on them with one
// all-reduce and the host reads them with one copy. Its layout is named here and read back only
// through StepNumbers::read.
struct StepNumbers {
  double loss = 0;       // mean loss over the step's micro-batches (and ranks)
  double correct = 0;    // correctly predicted tokens (summed over ranks)
  double grad_norm = 0;  // global gradient norm before clipping (the same on every rank)
  bool interrupt = false, out_of_time = false;  // any rank's stop flags (distributed runs)

  // [loss, correct, grad_norm] of one process: what GradientStep::run and the accumulating step give.
  static torch::Tensor pack(const torch::Tensor& loss, const torch::Tensor& correct, const torch::Tensor& grad_norm);
  // The same with this process's stop flags appended, for the all-reduce of several processes.
  static torch::Tensor with_flags(const torch::Tensor& packed, bool interrupt, bool out_of_time);
  // The host's copy of a packed tensor, summed over `world` processes (1: not reduced).
  static StepNumbers read(const torch::Tensor& packed, int64_t world);
};

class GradientStep {
 public:
  struct Options {
    bool autocast = false;      // bf16 autocast (CUDA)
    double max_grad_norm = 0;   // clip to this global norm (0: no clipping)
    bool cuda_graph = false;    // capture the step at its first run (graph_unavailable must be "")
  };
  GradientStep(model::Generator g, std::vector<torch::Tensor> params, Options options);
  ~GradientStep();

  // The gradients of one batch (tokens [B,S], labels [B]; draws for its B rows) in every
  // parameter's .grad, clipped; returns the step's numbers packed (StepNumbers::pack) on the
  // model's device (no host synchronisation). A captured step keeps the shape of its first batch;
  // with delayed fp8 scaling it is captured at the first step after the history is primed
  // (model/fp8_history.h), the steps before run eagerly.
  torch::Tensor run(const torch::Tensor& tokens, const torch::Tensor& labels, const ObjectiveDraws& draws);
  bool graphed() const { return options_.cuda_graph; }
  bool captured() const { return graph_ != nullptr; }  // a graphed step after its capture

 private:
  torch::Tensor eager(const torch::Tensor& tokens, const torch::Tensor& labels, const ObjectiveDraws& draws);

  model::Generator g_;
  std::vector<torch::Tensor> params_;
  Options options_;
  // the captured step and its input buffers
  torch::Tensor tokens_, labels_, orders_, drop_;
  std::unique_ptr<gpu::StepGraph> graph_;
};

}  // namespace rar::training
