// adamw.cpp — see adamw.h.
#include "training/adamw.h"

#include <ATen/ATen.h>

#include <cmath>

#include "util/error.h"

namespace rar::training {

bool published_no_decay(const std::string& name, const torch::Tensor& p) {
  if (p.dim() < 2) return true;
  for (const char* k : {"ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "embed"})
    if (name.find(k) != std::string::npos) return true;
  return false;
}

AdamW::AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, AdamWOptions opt,
             const std::function<bool(const std::string&, const torch::Tensor&)>& no_decay)
    : opt_(opt) {
  for (const auto& [name, p] : named_params) {
    if (!p.requires_grad()) continue;
    Slot s;
    s.name = name;
    s.param = p;
    s.exp_avg = torch::zeros_like(p, torch::MemoryFormat::Preserve);
    s.exp_avg_sq = torch::zeros_like(p, torch::MemoryFormat::Preserve);
    s.step = torch::zeros({}, p.options().dtype(torch::kFloat32));
    s.decay = !no_decay(name, p);
    slots_.push_back(std::move(s));
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard ng;
  ++step_;
  const double b1 = opt_.beta1, b2 = opt_.beta2, eps = opt_.eps;
  if (opt_.fused) {
    for (bool decay : {true, false}) {
      std::vector<at::Tensor> ps, gs, ms, vs, ts;
      for (auto& s : slots_)
        if (s.decay == decay && s.param.grad().defined()) {
          ps.push_back(s.param);
          gs.push_back(s.param.grad());
          ms.push_back(s.exp_avg);
          vs.push_back(s.exp_avg_sq);
          ts.push_back(s.step);
        }
      if (ps.empty()) continue;
      at::_foreach_add_(ts, 1);  // one launch, not one per parameter
      at::_fused_adamw_(ps, gs, ms, vs, /*max_exp_avg_sqs=*/{}, ts, lr, b1, b2, decay ? opt_.weight_decay : 0.0, eps,
                        /*amsgrad=*/false, /*maximize=*/false);
    }
    return;
  }
  for (auto& s : slots_) {
    const auto& g = s.param.grad();
    if (!g.defined()) continue;
    s.step.add_(1);
    const double t = s.step.item<float>();
    if (s.decay && opt_.weight_decay != 0) s.param.mul_(1 - lr * opt_.weight_decay);
    s.exp_avg.lerp_(g, 1 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2);
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    auto denom = (s.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(eps);
    s.param.addcdiv_(s.exp_avg, denom, -lr / bc1);
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_)
    if (s.param.grad().defined()) s.param.mutable_grad() = torch::Tensor();
}

std::vector<std::string> AdamW::decayed() const {
  std::vector<std::string> out;
  for (const auto& s : slots_)
    if (s.decay) out.push_back(s.name);
  return out;
}

std::vector<std::string> AdamW::not_decayed() const {
  std::vector<std::string> out;
  for (const auto& s : slots_)
    if (!s.decay) out.push_back(s.name);
  return out;
}

io::StateDict AdamW::state() const {
  io::StateDict sd;
  sd.set("step", torch::tensor(step_, torch::kInt64));
  for (const auto& s : slots_) {
    sd.set("step." + s.name, s.step.detach().cpu().clone());
    sd.set("exp_avg." + s.name, s.exp_avg.detach().cpu().clone());
    sd.set("exp_avg_sq." + s.name, s.exp_avg_sq.detach().cpu().clone());
  }
  return sd;
}

std::vector<torch::Tensor> AdamW::state_tensors() const {
  std::vector<torch::Tensor> out;
  for (const auto& s : slots_) out.insert(out.end(), {s.exp_avg, s.exp_avg_sq, s.step});
  return out;
}

void AdamW::load_state(const io::StateDict& sd) {
  torch::NoGradGuard ng;
  step_ = sd.at("step").item<int64_t>();
  for (auto& s : slots_) {
    for (auto [key, dst] : {std::pair<const char*, torch::Tensor*>{"exp_avg.", &s.exp_avg}, {"exp_avg_sq.", &s.exp_avg_sq},
                            {"step.", &s.step}}) {
      const auto& t = sd.at(key + s.name);
      check(t.sizes() == dst->sizes(), sd.source, ": optimizer state '", key, s.name, "' has shape ", t.sizes(),
            ", the model needs ", dst->sizes());
      dst->copy_(t);
    }
  }
}

torch::Tensor clip_grad_norm_(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad().detach());
  if (grads.empty()) return torch::zeros({}, torch::kFloat32);
  auto norms = at::_foreach_norm(grads, 2);
  for (auto& n : norms) n = n.to(torch::kFloat32);
  auto total = torch::stack(norms).norm(2);
  if (max_norm > 0) {
    auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    bool one_dtype = true;
    for (const auto& g : grads) one_dtype = one_dtype && g.scalar_type() == coef.scalar_type();
    if (one_dtype) at::_foreach_mul_(grads, coef);  // one launch for every gradient
    else
      for (auto& g : grads) g.mul_(coef.to(g.dtype()));
  }
  return total;
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  return clip_grad_norm_(params, max_norm).item<double>();
}

void AdamW::reset_rows(const torch::Tensor& param, const torch::Tensor& rows) {
  torch::NoGradGuard ng;
  for (auto& s : slots_)
    if (s.param.is_same(param)) {
      s.exp_avg.index_fill_(0, rows, 0);
      s.exp_avg_sq.index_fill_(0, rows, 0);
      return;
    }
  fail("optimizer: reset_rows on a parameter it does not hold");
}

}  // namespace rar::training
