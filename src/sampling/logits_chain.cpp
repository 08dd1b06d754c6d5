#include "sampling/logits_chain.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "util/error.h"
#include "util/gpu.h"

namespace rar::sampling {

namespace {

torch::Tensor per_row(const torch::Tensor& logits, double v, at::ScalarType dtype) {
  return torch::full({logits.size(0), 1}, v, logits.options().dtype(dtype));
}

}  // namespace

torch::Tensor apply_temperature(const torch::Tensor& logits, double temperature) {
  check(temperature > 0, "temperature must be > 0, got ", temperature);
  return temperature == 1.0 ? logits : apply_temperature_rows(logits, per_row(logits, temperature, torch::kFloat32));
}

torch::Tensor apply_top_k(const torch::Tensor& logits, int64_t k) {
  if (k <= 0 || k >= logits.size(-1)) return logits;
  return apply_top_k_rows(logits, per_row(logits, static_cast<double>(k), torch::kInt64));
}

torch::Tensor apply_top_p(const torch::Tensor& logits, double p) {
  check(p > 0 && p <= 1, "top-p must lie in (0, 1], got ", p);
  if (p >= 1.0) return logits;
  return apply_top_p_rows(logits, per_row(logits, p, torch::kFloat32));
}

torch::Tensor draw(const torch::Tensor& logits, at::Generator& gen) {
  std::vector<at::Generator> gens{gen};
  return draw_rows(logits, {RowBlock{0, logits.size(0)}}, gens);
}

torch::Tensor apply_temperature_rows(const torch::Tensor& logits, const torch::Tensor& temperature) {
  return logits / temperature;
}

torch::Tensor apply_top_k_rows(const torch::Tensor& logits, const torch::Tensor& k) {
  // the k-th largest logit of each row (ties counted), as topk's last value
  auto kth = std::get<0>(logits.sort(-1, /*descending=*/true)).gather(-1, k - 1);  // [B,1]
  return logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
}

torch::Tensor apply_top_p_rows(const torch::Tensor& logits, const torch::Tensor& p) {
  auto [sorted, idx] = logits.sort(-1, /*descending=*/true);
  auto probs = sorted.softmax(-1);
  // Drop a token when the tokens ranked above it already reach p (never in a row with p = 1,
  // where a rounded cumulative sum could otherwise reach 1 before the last token).
  const auto inf = std::numeric_limits<float>::infinity();
  auto drop_sorted = (probs.cumsum(-1) - probs) >= p.masked_fill(p >= 1.0, inf);
  auto drop = torch::zeros_like(drop_sorted).scatter(-1, idx, drop_sorted);
  return logits.masked_fill(drop, -inf);
}

torch::Tensor draw_rows(const torch::Tensor& logits, const std::vector<RowBlock>& blocks,
                        std::vector<at::Generator>& gens) {
  check(blocks.size() == gens.size(), "draw_rows: ", blocks.size(), " row blocks, ", gens.size(), " generators");
  auto probs = logits.softmax(-1);
  auto q = torch::ones_like(probs);
  for (size_t i = 0; i < blocks.size(); ++i) q.narrow(0, blocks[i].first, blocks[i].n).exponential_(1, gens[i]);
  return (probs / q).argmax(-1);
}

at::Generator make_generator(const torch::Device& device, uint64_t seed) {
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  return gpu::cuda_generator(device, seed);
}

}  // namespace rar::sampling
