// vq_objective.cpp — see vq_objective.h.
#include "training/vq_objective.h"

#include "util/autocast.h"
#include "util/error.h"

namespace rar::training {

namespace F = torch::nn::functional;

void VqLossWeights::validate() const {
  check(reconstruction == "l1" || reconstruction == "l2" || reconstruction == "l1+l2",
        "losses.reconstruction: expected l1, l2 or l1+l2, got '", reconstruction, "'");
}

Encoded vq_encode(model::VQModel& vq, const torch::Tensor& x, bool autocast) {
  torch::Tensor z;
  {
    Autocast ac(autocast, x.device().type(), torch::kBFloat16);
    z = vq->quantize->prepare(vq->encoder(x).to(torch::kFloat32));
  }
  Encoded e;
  e.n = z.size(0), e.h = z.size(2), e.w = z.size(3);
  e.z_flat = z.permute({0, 2, 3, 1}).reshape({-1, z.size(1)});
  return e;
}

void init_codebook(model::VQModel& vq, const torch::Tensor& z_flat) {
  torch::NoGradGuard ng;
  const int64_t K = vq->cfg.codebook_size, D = z_flat.size(1);
  auto pick = torch::randint(z_flat.size(0), {K}, torch::TensorOptions(torch::kInt64).device(z_flat.device()));
  vq->quantize->embedding->weight.copy_(z_flat.detach().index_select(0, pick) + 0.01 * torch::randn({K, D}, z_flat.options()));
}

VqLoss vq_loss(model::VQModel& vq, const Encoded& z, const torch::Tensor& x, const VqLossWeights& w, bool autocast) {
  VqLoss l;
  const auto e = vq->quantize->codebook();
  const auto& z_flat = z.z_flat;
  const int64_t D = z_flat.size(1);
  {
    torch::NoGradGuard ng;
    l.codes = model::nearest_codes(z_flat, e);
  }
  auto zq_flat = e.index_select(0, l.codes);
  l.codebook = F::mse_loss(zq_flat, z_flat.detach());
  l.commitment = F::mse_loss(z_flat, zq_flat.detach());
  // straight-through: the decoder sees z_q, its gradient flows to z unchanged
  auto z_st = (z_flat + (zq_flat - z_flat).detach()).view({z.n, z.h, z.w, D}).permute({0, 3, 1, 2});
  torch::Tensor recon;
  {
    Autocast ac(autocast, x.device().type(), torch::kBFloat16);
    recon = vq->decoder(z_st).to(torch::kFloat32);
  }
  l.mse = F::mse_loss(recon, x);
  if (w.reconstruction == "l1") l.reconstruction = F::l1_loss(recon, x);
  else if (w.reconstruction == "l2") l.reconstruction = l.mse;
  else l.reconstruction = F::l1_loss(recon, x) + l.mse;
  l.loss = w.reconstruction_weight * l.reconstruction + w.codebook_weight * l.codebook + w.commitment * l.commitment;
  return l;
}

CodeUsage::CodeUsage(int64_t codes, double decay, const torch::Device& device)
    : K_(codes), decay_(decay),
      shares_(torch::full({codes}, 1.0 / static_cast<double>(codes), torch::TensorOptions(torch::kFloat32).device(device))) {}

torch::Tensor CodeUsage::add(const torch::Tensor& codes) {
  torch::NoGradGuard ng;
  auto counts = torch::bincount(codes, {}, K_);
  shares_.mul_(decay_).add_(counts.to(torch::kFloat32) / static_cast<double>(codes.size(0)), 1 - decay_);
  return counts;
}

int64_t CodeUsage::restart_dead(model::VQModel& vq, AdamW& opt, const torch::Tensor& z_flat, double threshold) {
  torch::NoGradGuard ng;
  auto dead = (shares_ * static_cast<double>(K_) < threshold).nonzero().flatten();
  const int64_t nd = dead.size(0);
  if (nd == 0) return 0;
  auto pick = torch::randint(z_flat.size(0), {nd}, dead.options());
  auto& w = vq->quantize->embedding->weight;
  w.index_copy_(0, dead, z_flat.detach().index_select(0, pick) + 0.01 * torch::randn({nd, z_flat.size(1)}, z_flat.options()));
  opt.reset_rows(w, dead);
  shares_.index_fill_(0, dead, 1.0 / static_cast<double>(K_));
  return nd;
}

}  // namespace rar::training
