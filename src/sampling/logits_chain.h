// logits_chain.h — turning next-token logits into a token, as a chain of small stages each
// testable alone (temperature -> top-k -> top-p -> draw). All take and return [B,V] float32.
#pragma once
#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <vector>

namespace rar::sampling {

torch::Tensor apply_temperature(const torch::Tensor& logits, double temperature);
// Keeps the k largest logits per row (ties at the k-th value are kept); k <= 0 keeps all.
torch::Tensor apply_top_k(const torch::Tensor& logits, int64_t k);
// Keeps the smallest set of tokens whose probability reaches p (always at least the best one).
torch::Tensor apply_top_p(const torch::Tensor& logits, double p);
// One token per row from softmax(logits), using `gen` — [B] int64.
torch::Tensor draw(const torch::Tensor& logits, at::Generator& gen);

// The row-wise forms, one setting per row ([B,1] tensors on the logits' device), so that a batch
// of requests with settings of their own runs one chain. The scalar forms above are these with
// every row alike (a single implementation: a row's result never depends on its neighbours').
torch::Tensor apply_temperature_rows(const torch::Tensor& logits, const torch::Tensor& temperature);  // f32 > 0
// k [B,1] int64 in [1, V] (V keeps every logit)
torch::Tensor apply_top_k_rows(const torch::Tensor& logits, const torch::Tensor& k);
// p [B,1] float32 in (0, 1]; rows with p = 1 keep every logit
torch::Tensor apply_top_p_rows(const torch::Tensor& logits, const torch::Tensor& p);
// Rows [first, first + n) drawn with their own generator: argmax(softmax(l) / q) with q ~ Exp(1)
// drawn from that generator for those rows — torch.multinomial's draw of one sample (its fast
// path), so a block's tokens equal draw(its rows, its generator). Rows in no block get their most
// probable token.
struct RowBlock {
  int64_t first = 0, n = 0;
};
torch::Tensor draw_rows(const torch::Tensor& logits, const std::vector<RowBlock>& blocks,
                        std::vector<at::Generator>& gens);

// A seeded generator on `device` (CPU, or CUDA in the CUDA build).
at::Generator make_generator(const torch::Device& device, uint64_t seed);

}  // namespace rar::sampling
