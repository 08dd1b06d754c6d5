// prepare.cpp — see prepare.h.
#include "data/prepare.h"

#include <ATen/Parallel.h>

#include "data/transforms.h"
#include "util/error.h"

namespace rar::data {

torch::Tensor prepare(const torch::Tensor& img, int64_t size, int64_t channels, int64_t pad) {
  auto x = size > 0 ? adm_center_crop(img, size) : img;
  if (pad > 0) x = pad_to(x, pad);
  if (x.size(2) == 1 && channels == 3) x = x.expand({x.size(0), x.size(1), 3});
  check(x.size(2) == channels, "an image of ", x.size(2), " channels; the tokenizer expects ", channels);
  return x;
}

std::vector<torch::Tensor> load_images(const ImageSource& src, const std::vector<int64_t>& indices, int64_t size,
                                       int64_t channels, int64_t pad) {
  const int64_t n = static_cast<int64_t>(indices.size());
  std::vector<torch::Tensor> out(n);
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        out[i] = prepare(src.image(indices[i]), size, channels, pad).contiguous();
      } catch (const Error& err) {
        const std::string what = err.what(), name = src.name_of(indices[i]);
        if (what.compare(0, name.size(), name) == 0) throw;  // the reader named the file already
        fail(name, ": ", what);
      }
    }
  });
  // one batch is one tensor: every image must prepare to the first one's size
  for (int64_t i = 1; i < n; ++i)
    check(out[i].sizes() == out[0].sizes(), src.name_of(indices[i]), ": prepares to ", out[i].size(0), "x",
          out[i].size(1), ", ", src.name_of(indices[0]), " to ", out[0].size(0), "x", out[0].size(1),
          ": images of one dataset must share a size (crop or pad them: --size / data.size, --pad / data.pad)");
  return out;
}

std::vector<torch::Tensor> load_range(const ImageSource& src, int64_t first, int64_t n, int64_t size,
                                      int64_t channels, int64_t pad) {
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = first + i;
  return load_images(src, idx, size, channels, pad);
}

torch::Tensor to_input(const std::vector<torch::Tensor>& imgs, const torch::Device& device) {
  return torch::stack(imgs).permute({0, 3, 1, 2}).to(device).to(torch::kFloat32).div_(255.0);
}

}  // namespace rar::data

#include "util/progress.h"

namespace rar::data {

ImageBatches::ImageBatches(const ImageSource& src, int64_t size, int64_t channels, int64_t pad, int64_t cache_bytes,
                           const std::string& label)
    : src_(src), size_(size), channels_(channels), pad_(pad) {
  check(src.size() > 0, "image source is empty");
  auto first = prepare(src.image(0), size, channels, pad);
  chw_ = {first.size(2), first.size(0), first.size(1)};
  const int64_t per = chw_[0] * chw_[1] * chw_[2];
  if (per * src.size() > cache_bytes) return;
  cache_ = torch::empty({src.size(), chw_[0], chw_[1], chw_[2]}, torch::kUInt8);
  Progress p(label, src.size(), "img");
  const int64_t chunk = 4096;
  for (int64_t i = 0; i < src.size(); i += chunk) {
    const int64_t n = std::min(chunk, src.size() - i);
    auto imgs = load_range(src, i, n, size, channels, pad);
    for (int64_t j = 0; j < n; ++j) {
      check(imgs[j].sizes() == first.sizes(), src.name_of(i + j), ": prepares to ", imgs[j].sizes(), ", ",
            src.name_of(0), " to ", first.sizes(), ": set data.size (crop) or data.pad so all images share one size");
      cache_[i + j].copy_(imgs[j].permute({2, 0, 1}));
    }
    p.update(i + n);
  }
  p.finish();
}

torch::Tensor ImageBatches::get(const std::vector<int64_t>& indices) const {
  if (cache_.defined())
    return cache_.index_select(0, torch::from_blob(const_cast<int64_t*>(indices.data()),
                                                   {static_cast<int64_t>(indices.size())}, torch::kInt64));
  auto imgs = load_images(src_, indices, size_, channels_, pad_);
  for (size_t j = 0; j < imgs.size(); ++j)
    check(imgs[j].size(0) == chw_[1] && imgs[j].size(1) == chw_[2], src_.name_of(indices[j]), ": prepares to ",
          imgs[j].sizes(), ", others to ", chw_[1], "x", chw_[2], ": set data.size (crop) or data.pad");
  return torch::stack(imgs).permute({0, 3, 1, 2}).contiguous();
}

torch::Tensor ImageBatches::range(int64_t first, int64_t n) const {
  if (cache_.defined()) return cache_.narrow(0, first, n);
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = first + i;
  return get(idx);
}

}  // namespace rar::data
