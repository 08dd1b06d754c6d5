// image.h — PNG and JPEG files as uint8 tensors [H,W,C] (C = 1 grey, 3 RGB), through libpng and
// libjpeg(-turbo); plus the sample-grid layout used for every picture we write. Writes are atomic.
#pragma once
#include <string>

#include <torch/types.h>

namespace rar::io {

// Decoding refuses images larger than this before allocating anything: 64 megapixels (8192 x 8192;
// 192 MiB as RGB) and 65535 pixels a side. A header may claim any size; its pixels must also come
// from the file (a truncated JPEG is an error, not a grey-padded image).
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;
constexpr int64_t kMaxImageSide = 65535;

// PNG (any bit depth/colour type; alpha dropped, palette expanded) or JPEG, by content.
torch::Tensor read_image(const std::string& path);
// The same from the file's bytes (`what` names the source in errors).
torch::Tensor decode_image(const std::string& bytes, const std::string& what);
// uint8 [H,W,C], C in {1,3}. PNG or JPEG chosen by the extension (.png, .jpg/.jpeg).
void write_image(const std::string& path, const torch::Tensor& hwc, int jpeg_quality = 95);
// fast: less compression for much less time (the service's images; the pixels are the same).
std::string encode_png(const torch::Tensor& hwc, bool fast = false);

// Images [N,C,H,W] float in [0,1] (or uint8) -> one uint8 [H',W',C] grid with `cols` columns and
// `pad` pixels of `pad_value` between and around the tiles.
torch::Tensor make_grid(const torch::Tensor& images, int64_t cols, int64_t pad = 2, int pad_value = 255);
// float [N,C,H,W] in [0,1] -> uint8 [N,H,W,C], rounding like PIL (x*255 + 0.5, clamped in float32),
// on the input's device (a GPU batch converts there and crosses to the host at a quarter of the size).
torch::Tensor to_uint8_nhwc(const torch::Tensor& images);

}  // namespace rar::io
