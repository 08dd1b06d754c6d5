// small_step.h — a small generator and one training step's inputs, shared by the tests that
// compare two ways of running that step (bf16 vs fp32, fused vs plain, fp8, recomputed blocks).
#pragma once
#include <torch/torch.h>

#include "model/generator.h"
#include "model/ops/fused.h"
#include "model/vqgan.h"
#include "training/rar_objective.h"
#include "training/train_step.h"

namespace rar::test_support {

// The fused paths' tests run where the build has the CUDA kernels and a GPU is present.
inline bool have_kernels() { return torch::cuda::is_available() && model::fused_kernels_built(); }
constexpr auto kPlain = model::OpPath::plain, kFused = model::OpPath::fused;

// A VQ tokenizer small enough for CPU tests: 1 channel, 16 codes of 4 dims, 2x downsampling.
inline model::VQConfig tiny_vq_config() {
  model::VQConfig vc;
  vc.image_channels = 1;
  vc.base_channels = 8;
  vc.channel_mult = {1, 2};
  vc.res_blocks = 1;
  vc.z_channels = 4;
  vc.codebook_size = 16;
  vc.norm_groups = 4;
  return vc;
}


struct SmallStep {
  model::GeneratorConfig cfg;
  model::Generator g{nullptr};
  torch::Tensor tokens, labels;  // [8,64], [8]
  training::ObjectiveDraws draws;  // r = 0.5, label dropout 0.1

  // Runs forward + backward; returns the loss and every parameter's gradient, flattened in float32.
  std::pair<double, torch::Tensor> step(bool autocast) {
    for (auto& p : g->parameters()) p.mutable_grad() = torch::Tensor();
    auto la = training::forward_backward(g, tokens, labels, draws, autocast, 1.0);
    std::vector<torch::Tensor> grads;
    for (auto& p : g->parameters()) grads.push_back(p.grad().flatten().to(torch::kFloat32));
    return {la.loss.item<double>(), torch::cat(grads)};
  }
};

// 2 layers, seq 64, codebook 64, 5 classes, no dropout; parameters nudged off the published init
// (zero adaLN) so every path carries gradient. In training mode on `device`.
inline SmallStep small_step(int64_t hidden, int64_t heads, const torch::Device& device) {
  SmallStep s;
  s.cfg.hidden = hidden;
  s.cfg.layers = 2;
  s.cfg.heads = heads;
  s.cfg.mlp = 2 * hidden;
  s.cfg.codebook = 64;
  s.cfg.classes = 5;
  s.cfg.seq_len = 64;
  s.cfg.dropout = s.cfg.attn_dropout = 0.0;
  torch::manual_seed(8);
  s.g = model::Generator(s.cfg);
  {
    torch::NoGradGuard ng;
    for (auto& p : s.g->parameters()) p.add_(0.05 * torch::randn_like(p));
  }
  s.g->to(device);
  s.g->train();
  auto opts = torch::TensorOptions(torch::kInt64).device(device);
  s.tokens = torch::randint(0, 64, {8, 64}, opts);
  s.labels = torch::randint(0, 5, {8}, opts);
  std::vector<int64_t> scan(64);
  for (int64_t i = 0; i < 64; ++i) scan[i] = i;
  s.draws = training::draw_objective(8, 0, 8, scan, 0.5, 0.1, 1, 0);
  return s;
}
inline SmallStep small_cuda_step(int64_t hidden, int64_t heads) { return small_step(hidden, heads, torch::kCUDA); }

}  // namespace rar::test_support
