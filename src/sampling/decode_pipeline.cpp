// decode_pipeline.cpp — see decode_pipeline.h.
#include "sampling/decode_pipeline.h"

#include <algorithm>
#include <vector>

#include "io/image.h"
#include "util/error.h"
#include "util/gpu.h"

namespace rar::sampling {

DecodePipeline::DecodePipeline(model::VQModel vq, int64_t chunk) : vq_(std::move(vq)), chunk_(chunk) {
  check(chunk_ > 0, "decode pipeline: chunk must be > 0, got ", chunk_);
  const auto device = vq_->quantize->embedding->weight.device();
  if (device.is_cuda()) side_ = std::make_unique<gpu::SideStream>(device);
}

DecodePipeline::~DecodePipeline() {
  // Nothing may still be decoding into memory that is about to be freed.
  while (!empty()) take();
}

bool DecodePipeline::empty() {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.empty();
}

// Enqueues the decoding of every chunk of every piece without waiting for any (the codes were
// checked at submit: a per-chunk check would wait for the previous chunk's decoding).
torch::Tensor DecodePipeline::decode(const torch::Tensor& tokens, const std::vector<int64_t>& pieces) {
  std::vector<torch::Tensor> parts;
  int64_t first = 0;
  for (const int64_t n : pieces) {
    for (int64_t i = 0; i < n; i += chunk_)
      parts.push_back(io::to_uint8_nhwc(vq_->decode(tokens.narrow(0, first + i, std::min(chunk_, n - i)), /*validate=*/false)));
    first += n;
  }
  return parts.size() == 1 ? parts[0] : torch::cat(parts);
}

void DecodePipeline::submit(const torch::Tensor& tokens, const std::vector<int64_t>& pieces_in) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> pieces = pieces_in.empty() ? std::vector<int64_t>{tokens.size(0)} : pieces_in;
  int64_t rows = 0;
  for (const int64_t n : pieces) {
    check(n > 0, "decode pipeline: a piece of ", n, " rows");
    rows += n;
  }
  check(rows <= tokens.size(0), "decode pipeline: pieces of ", rows, " rows in a batch of ", tokens.size(0));
  const auto used = tokens.narrow(0, 0, rows);
  vq_->check_codes(used);  // once per batch, before anything is queued on the side stream
  auto images = side_ ? side_->run(used, [this, pieces](const torch::Tensor& t) { return decode(t, pieces); })
                      : decode(used, pieces).cpu();
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(std::move(images));
}

torch::Tensor DecodePipeline::take() {
  torch::Tensor images;
  {
    std::lock_guard<std::mutex> lock(mu_);
    check(!pending_.empty(), "decode pipeline: take() without a submitted batch");
    images = std::move(pending_.front());
    pending_.pop_front();
  }
  return side_ ? side_->collect(images) : images;
}

}  // namespace rar::sampling
