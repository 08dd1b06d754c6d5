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
  while (!pending_.empty()) take();
}

// Enqueues the decoding of every chunk without waiting for any (the codes were checked at submit:
// a per-chunk check would wait for the previous chunk's decoding).
torch::Tensor DecodePipeline::decode(const torch::Tensor& tokens) {
  const int64_t B = tokens.size(0);
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < B; i += chunk_)
    parts.push_back(io::to_uint8_nhwc(vq_->decode(tokens.narrow(0, i, std::min(chunk_, B - i)), /*validate=*/false)));
  return parts.size() == 1 ? parts[0] : torch::cat(parts);
}

void DecodePipeline::submit(const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  vq_->check_codes(tokens);  // once per batch, before anything is queued on the side stream
  if (side_) pending_.push_back(side_->run(tokens, [this](const torch::Tensor& t) { return decode(t); }));
  else pending_.push_back(decode(tokens).cpu());
}

torch::Tensor DecodePipeline::take() {
  check(!pending_.empty(), "decode pipeline: take() without a submitted batch");
  auto images = std::move(pending_.front());
  pending_.pop_front();
  return side_ ? side_->collect(images) : images;
}

}  // namespace rar::sampling
