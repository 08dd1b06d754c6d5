#include "sampling/logits_chain.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "util/error.h"
#include "util/gpu.h"

namespace rar::sampling {

torch::Tensor apply_temperature(const torch::Tensor& logits, double temperature) {
  check(temperature > 0, "temperature must be > 0, got ", temperature);
  return temperature == 1.0 ? logits : logits / temperature;
}

torch::Tensor apply_top_k(const torch::Tensor& logits, int64_t k) {
  if (k <= 0 || k >= logits.size(-1)) return logits;
  auto kth = std::get<0>(logits.topk(k, -1)).narrow(-1, k - 1, 1);  // [B,1]
  return logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
}

torch::Tensor apply_top_p(const torch::Tensor& logits, double p) {
  check(p > 0 && p <= 1, "top-p must lie in (0, 1], got ", p);
  if (p >= 1.0) return logits;
  auto [sorted, idx] = logits.sort(-1, /*descending=*/true);
  auto probs = sorted.softmax(-1);
  // Drop a token when the tokens ranked above it already reach p.
  auto drop_sorted = (probs.cumsum(-1) - probs) >= p;
  auto drop = torch::zeros_like(drop_sorted).scatter(-1, idx, drop_sorted);
  return logits.masked_fill(drop, -std::numeric_limits<float>::infinity());
}

torch::Tensor draw(const torch::Tensor& logits, at::Generator& gen) {
  return torch::multinomial(logits.softmax(-1), 1, /*replacement=*/false, gen).squeeze(-1);
}

at::Generator make_generator(const torch::Device& device, uint64_t seed) {
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  return gpu::cuda_generator(device, seed);
}

}  // namespace rar::sampling
