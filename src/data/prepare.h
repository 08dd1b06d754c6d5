// prepare.h — turning source images into model input: the per-image preparation shared by the
// tokenizer commands and the tokenizer trainer (ADM crop, padding, channel adaptation), batched
// parallel loading, and the uint8 HWC -> float NCHW [0,1] conversion.
#pragma once
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/sources.h"

namespace rar::data {

// uint8 [H,W,C] -> uint8 [size|H, size|W, channels]: ADM center crop to `size` when > 0, zero-padded
// to `pad` x `pad` when > 0 (Fashion-MNIST 28 -> 32), grayscale expanded to RGB when channels == 3.
torch::Tensor prepare(const torch::Tensor& img, int64_t size, int64_t channels, int64_t pad = 0);

// Images `indices` of `src`, prepared, decoded in parallel (at::parallel_for).
std::vector<torch::Tensor> load_images(const ImageSource& src, const std::vector<int64_t>& indices, int64_t size,
                                       int64_t channels, int64_t pad);
// Images [first, first + n) of `src`.
std::vector<torch::Tensor> load_range(const ImageSource& src, int64_t first, int64_t n, int64_t size,
                                      int64_t channels, int64_t pad);

// uint8 [H,W,C] images -> float [B,C,H,W] in [0,1] on `device`.
torch::Tensor to_input(const std::vector<torch::Tensor>& imgs, const torch::Device& device);

}  // namespace rar::data

namespace rar::data {

// Random access to prepared images as uint8 [B,C,H,W] batches. When the prepared dataset fits in
// `cache_bytes` it is decoded once (in parallel, with a progress line) and kept in memory;
// otherwise every batch is decoded on demand.
class ImageBatches {
 public:
  ImageBatches(const ImageSource& src, int64_t size, int64_t channels, int64_t pad, int64_t cache_bytes,
               const std::string& label = "load");
  torch::Tensor get(const std::vector<int64_t>& indices) const;
  torch::Tensor range(int64_t first, int64_t n) const;
  int64_t size() const { return src_.size(); }
  int64_t label(int64_t i) const { return src_.label(i); }
  const std::vector<int64_t>& shape() const { return chw_; }  // C, H, W
  bool cached() const { return cache_.defined(); }

 private:
  const ImageSource& src_;
  int64_t size_, channels_, pad_;
  std::vector<int64_t> chw_;
  torch::Tensor cache_;  // uint8 [N,C,H,W] when cached
};

}  // namespace rar::data
