// transforms.h — image preprocessing for tokenization, matching the reference data pipeline.
// Resizing reproduces Pillow's `Image.resize` (separable, horizontal pass then vertical, 8-bit
// fixed-point coefficients) for the BOX and BICUBIC filters, so the ADM center crop used for the
// published models gives the same bytes as the Python pipeline.
// Images are uint8 [H,W,C] on the CPU.
#pragma once
#include <vector>

#include <torch/types.h>

namespace rar::data {

enum class Filter { Box, Bicubic };

// Pillow's Image.resize((width, height), resample=filter) on an 8-bit image.
torch::Tensor resize(const torch::Tensor& hwc, int64_t width, int64_t height, Filter filter);

// guided-diffusion's center_crop_arr: halve with a box filter while the short side is >= 2*size,
// bicubic-resize so the short side is `size` (long side rounded), then take the central size x size.
torch::Tensor adm_center_crop(const torch::Tensor& hwc, int64_t size);

// Mirror left-right.
torch::Tensor hflip(const torch::Tensor& hwc);

// Ten-crop at 1.1x: resize the short side to round(1.1*size) the ADM way, then the four corner
// crops and the centre crop of size x size, and their mirror images (10 images).
std::vector<torch::Tensor> ten_crop(const torch::Tensor& hwc, int64_t size);

// Pads a grayscale/RGB image symmetrically with `value` to at least size x size (e.g. 28 -> 32).
torch::Tensor pad_to(const torch::Tensor& hwc, int64_t size, int value = 0);

}  // namespace rar::data
