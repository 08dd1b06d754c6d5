// decode_pipeline.h — tokens -> uint8 images, overlapped with generation (DESIGN §5, §10): on a CUDA
// device each submitted batch is decoded on a side stream while the caller generates the next
// one on the main stream; take() hands back the oldest batch's images on the CPU. Elsewhere it
// decodes at submit(). The images are the same either way. A batch is decoded `chunk` images at a
// time (the decoder's activations dominate memory: ~8 GiB for 64 images in bf16, 4x that for 256),
// so a large generation batch does not need a decoder batch as large. With `pieces`, each piece
// of the batch (e.g. each request of a service's batch) is decoded on its own, in its own chunks,
// so its images do not depend on which rows shared the batch. submit() and take() may be called
// from two threads (a generating one and a delivering one); batches come back in order.
#pragma once
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include <torch/torch.h>

#include "model/vqgan.h"
#include "util/gpu.h"

namespace rar::sampling {

class DecodePipeline {
 public:
  explicit DecodePipeline(model::VQModel vq, int64_t chunk = 64);
  ~DecodePipeline();
  // Starts decoding tokens [B, h*w] (on the VQ model's device); `pieces`: the sizes of the rows'
  // pieces in order, summing to at most B (rows after them are not decoded; empty: one piece).
  void submit(const torch::Tensor& tokens, const std::vector<int64_t>& pieces = {});
  // The oldest submitted batch's images, uint8 [rows,H,W,C] on the CPU (waits for them).
  torch::Tensor take();
  bool empty();

 private:
  torch::Tensor decode(const torch::Tensor& tokens, const std::vector<int64_t>& pieces);
  model::VQModel vq_;
  int64_t chunk_;
  std::mutex mu_;
  std::deque<torch::Tensor> pending_;     // submitted batches' images (on the device while decoding)
  std::unique_ptr<gpu::SideStream> side_;  // CUDA: decoding overlapped with the caller's stream
};

}  // namespace rar::sampling
