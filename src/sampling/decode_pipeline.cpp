// decode_pipeline.cpp — see decode_pipeline.h.
#include "sampling/decode_pipeline.h"

#include <algorithm>
#include <vector>

#include "io/image.h"
#include "util/error.h"

#ifdef RAR_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace rar::sampling {

struct DecodePipeline::Pending {
  torch::Tensor images;  // uint8 NHWC, on the model's device until take()
#ifdef RAR_WITH_CUDA
  at::cuda::CUDAEvent done;
#endif
};

#ifdef RAR_WITH_CUDA
struct DecodePipeline::Side {
  c10::cuda::CUDAStream stream;
};
#endif

DecodePipeline::DecodePipeline(model::VQModel vq, int64_t chunk) : vq_(std::move(vq)), chunk_(chunk) {
  check(chunk_ > 0, "decode pipeline: chunk must be > 0, got ", chunk_);
#ifdef RAR_WITH_CUDA
  const auto device = vq_->quantize->embedding->weight.device();
  if (device.is_cuda()) side_ = std::make_unique<Side>(Side{c10::cuda::getStreamFromPool(false, device.index())});
#endif
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
  auto p = std::make_unique<Pending>();
#ifdef RAR_WITH_CUDA
  if (side_) {
    // The side stream starts once the main stream has produced the tokens; the tokens' memory
    // must not be reused by the main stream before the side stream has read it.
    at::cuda::CUDAEvent ready;
    ready.record(c10::cuda::getCurrentCUDAStream(tokens.device().index()));
    c10::cuda::CUDAStreamGuard guard(side_->stream);
    ready.block(side_->stream);
    tokens.record_stream(side_->stream);
    p->images = decode(tokens);
    p->done.record(side_->stream);
    pending_.push_back(std::move(p));
    return;
  }
#endif
  p->images = decode(tokens).cpu();
  pending_.push_back(std::move(p));
}

torch::Tensor DecodePipeline::take() {
  check(!pending_.empty(), "decode pipeline: take() without a submitted batch");
  auto p = std::move(pending_.front());
  pending_.pop_front();
#ifdef RAR_WITH_CUDA
  if (side_) {
    p->done.synchronize();
    c10::cuda::CUDAStreamGuard guard(side_->stream);  // the images belong to the side stream
    return p->images.cpu();
  }
#endif
  return p->images;
}

}  // namespace rar::sampling
