// train_step.cpp — see train_step.h.
#include "training/train_step.h"

#include "training/adamw.h"
#include "util/autocast.h"
#include "util/error.h"
#include "util/gpu.h"

namespace rar::training {

LossAndAccuracy forward_backward(model::Generator& g, const torch::Tensor& tokens, const torch::Tensor& labels,
                                 const ObjectiveDraws& draws, bool autocast, double grad_scale) {
  const auto device = tokens.device();
  auto orders = draws.orders.to(device, /*non_blocking=*/true);
  auto cond = g->condition_tokens(labels, draws.drop.to(device, /*non_blocking=*/true));
  torch::Tensor logits;
  {
    Autocast ac(autocast, device.type(), torch::kBFloat16);
    logits = g->forward(tokens, cond, orders);
  }
  auto la = next_token_loss(logits, tokens, orders);
  (la.loss * grad_scale).backward();
  return la;
}

std::string graph_unavailable(const model::Generator& g, const torch::Device& device) {
  if (!device.is_cuda()) return "not on a CUDA device";
  if (!gpu::built()) return "a build without CUDA";
  if (g->recompute_layers > 0) return "recomputed blocks (use_checkpoint) restore the generator state";
  return "";
}

GradientStep::GradientStep(model::Generator g, std::vector<torch::Tensor> params, Options options)
    : g_(std::move(g)), params_(std::move(params)), options_(options) {
  if (options_.cuda_graph) {
    const auto device = params_.at(0).device();
    const auto why = graph_unavailable(g_, device);
    check(why.empty(), "training step: no CUDA graph: ", why);
  }
}
GradientStep::~GradientStep() = default;

namespace {
enum Slot : int64_t { kLoss, kCorrect, kGradNorm, kInterrupt, kOutOfTime };
}

torch::Tensor StepNumbers::pack(const torch::Tensor& loss, const torch::Tensor& correct, const torch::Tensor& grad_norm) {
  const auto dev = loss.device();
  return torch::stack({loss.to(torch::kFloat64), correct.to(dev, torch::kFloat64), grad_norm.to(dev, torch::kFloat64)});
}

torch::Tensor StepNumbers::with_flags(const torch::Tensor& packed, bool interrupt, bool out_of_time) {
  auto flags = torch::tensor({interrupt ? 1.0 : 0.0, out_of_time ? 1.0 : 0.0}, torch::kFloat64);
  return torch::cat({packed, flags.to(packed.device(), /*non_blocking=*/true)});
}

StepNumbers StepNumbers::read(const torch::Tensor& packed, int64_t world) {
  const auto host = packed.to(torch::kCPU, torch::kFloat64).contiguous();
  check(host.dim() == 1 && host.size(0) >= 3, "step numbers: expected [loss, correct, grad_norm(, flags)], got ",
        host.sizes());
  const double* h = host.data_ptr<double>();
  StepNumbers n;
  const double ranks = static_cast<double>(world);
  n.loss = h[kLoss] / ranks;           // each rank's mean, averaged
  n.correct = h[kCorrect];             // summed
  n.grad_norm = h[kGradNorm] / ranks;  // every rank's is the same (averaged gradients)
  if (host.size(0) > kOutOfTime) n.interrupt = h[kInterrupt] > 0, n.out_of_time = h[kOutOfTime] > 0;
  return n;
}

torch::Tensor GradientStep::eager(const torch::Tensor& tokens, const torch::Tensor& labels, const ObjectiveDraws& d) {
  for (auto& p : params_) p.mutable_grad() = torch::Tensor();
  auto la = forward_backward(g_, tokens, labels, d, options_.autocast, 1.0);
  auto norm = clip_grad_norm_(params_, options_.max_grad_norm);
  return StepNumbers::pack(la.loss.detach(), la.correct, norm);
}

torch::Tensor GradientStep::run(const torch::Tensor& tokens, const torch::Tensor& labels, const ObjectiveDraws& d) {
  const auto device = params_.at(0).device();
  // Delayed fp8 scaling's first step scales each tensor by its own magnitude: not the step to capture.
  const bool priming = g_->fp8_history() && !g_->fp8_history()->primed();
  if (!options_.cuda_graph || (priming && !graph_)) return eager(tokens.to(device), labels.to(device), d);
  if (!graph_) {
    // the input buffers of every replay, shaped by the first batch
    tokens_ = tokens.to(device, torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
    labels_ = labels.to(device, torch::kInt64, false, true);
    orders_ = d.orders.to(device, torch::kInt64, false, true);
    drop_ = d.drop.to(device, torch::kBool, false, true);
    // The capture starts from no gradients, so the captured backward writes them (rather than
    // adding to them) into tensors of the graph's memory, which every replay rewrites.
    graph_ = std::make_unique<gpu::StepGraph>(
        [this] { return eager(tokens_, labels_, ObjectiveDraws{orders_, torch::Tensor(), drop_}); },
        gpu::StepGraphOptions{/*rng_unchanged=*/true, /*release_cache=*/true});
  } else {
    check(tokens.sizes() == tokens_.sizes() && labels.sizes() == labels_.sizes() && d.orders.sizes() == orders_.sizes(),
          "training step: a captured step takes batches of ", tokens_.sizes(), ", got ", tokens.sizes());
    tokens_.copy_(tokens, /*non_blocking=*/true);
    labels_.copy_(labels, true);
    orders_.copy_(d.orders, true);
    drop_.copy_(d.drop, true);
  }
  return graph_->replay();
}

}  // namespace rar::training
