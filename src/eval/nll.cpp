#include "eval/nll.h"

#include <torch/torch.h>

#include "util/error.h"

namespace rar::eval {

void validate_score_inputs(const model::GeneratorConfig& cfg, const torch::Tensor& tokens,
                           const torch::Tensor& classes, const torch::Tensor& orders) {
  check(tokens.dim() == 2 && tokens.size(1) == cfg.seq_len, "tokens: expected shape [N,", cfg.seq_len, "], got ",
        tokens.sizes());
  check(!tokens.is_floating_point() && !tokens.is_complex(), "tokens: expected integer ids");
  check(tokens.numel() == 0 || (tokens.min().item<int64_t>() >= 0 && tokens.max().item<int64_t>() < cfg.codebook),
        "tokens: ids must lie in [0, ", cfg.codebook, ")");
  check(classes.dim() == 1 && classes.size(0) == tokens.size(0), "classes: expected shape [", tokens.size(0),
        "], got ", classes.sizes());
  check(!classes.is_floating_point(), "classes: expected integer class ids");
  check(classes.numel() == 0 || (classes.min().item<int64_t>() >= 0 && classes.max().item<int64_t>() < cfg.classes),
        "classes: ids must lie in [0, ", cfg.classes, ")");
  if (orders.defined()) {
    check(orders.sizes() == tokens.sizes(), "orders: expected shape ", tokens.sizes(), ", got ", orders.sizes());
    auto sorted = std::get<0>(orders.to(torch::kInt64).sort(1));
    auto iota = torch::arange(cfg.seq_len, torch::kInt64).expand_as(sorted);
    check(sorted.equal(iota), "orders: every row must be a permutation of 0..", cfg.seq_len - 1);
  }
}

torch::Tensor sequence_nll(model::Generator& g, const torch::Tensor& tokens, const torch::Tensor& classes,
                           const torch::Tensor& orders, bool null_class, int64_t batch) {
  torch::NoGradGuard no_grad;
  validate_score_inputs(g->cfg, tokens, classes, orders);
  const auto device = g->cls_token.device();
  const int64_t N = tokens.size(0), S = g->cfg.seq_len;
  auto out = torch::empty({N}, torch::kFloat64);
  for (int64_t i = 0; i < N; i += batch) {
    const int64_t n = std::min(batch, N - i);
    auto x = tokens.narrow(0, i, n).to(device, torch::kInt64);
    auto y = classes.narrow(0, i, n).to(device, torch::kInt64);
    auto cond = null_class ? torch::full_like(y, g->cfg.null_class_token()) : g->condition_tokens(y);
    torch::Tensor tau = orders.defined() ? orders.narrow(0, i, n).to(device, torch::kInt64) : torch::Tensor();
    auto logits = g->forward(x, cond, tau).narrow(1, 0, S).to(torch::kFloat32);  // [n,S,V]
    auto targets = tau.defined() ? x.gather(1, tau) : x;                           // x[τ_{j+1}]
    auto logp = torch::log_softmax(logits, -1).gather(2, targets.unsqueeze(2)).squeeze(2);
    out.narrow(0, i, n).copy_((-logp.to(torch::kFloat64)).mean(1).cpu());
  }
  return out;
}

}  // namespace rar::eval
