#include "data/transforms.h"

#include <cmath>

#include "util/error.h"

namespace rar::data {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's 8-bit fixed point

double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bicubic_filter(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coeffs {
  std::vector<int> bounds;   // per output pixel: first input index, count
  std::vector<int32_t> k;    // ksize fixed-point weights per output pixel
  int ksize;
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for a full-range resize in_size -> out_size.
Coeffs coefficients(int64_t in_size, int64_t out_size, Filter f) {
  const double support_base = f == Filter::Box ? 0.5 : 2.0;
  double scale = static_cast<double>(in_size) / out_size, filterscale = std::max(scale, 1.0);
  double support = support_base * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(out_size * 2);
  c.k.assign(out_size * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = static_cast<int>(in_size);
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      double arg = (x + xmin - center + 0.5) * ss;
      w[x] = f == Filter::Box ? box_filter(arg) : bicubic_filter(arg);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      double k = ww != 0.0 ? w[x] / ww : w[x];
      double scaled = k * (1 << kPrecisionBits);
      c.k[xx * c.ksize + x] = static_cast<int32_t>(k < 0 ? std::trunc(-0.5 + scaled) : std::trunc(0.5 + scaled));
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

uint8_t clip8(int64_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One separable pass along `axis` (1 = width, 0 = height) of a contiguous [H,W,C] uint8 image.
torch::Tensor pass(const torch::Tensor& img, int axis, int64_t out_size, Filter f) {
  const int64_t H = img.size(0), W = img.size(1), C = img.size(2);
  const int64_t in_size = axis == 1 ? W : H;
  Coeffs c = coefficients(in_size, out_size, f);
  auto out = torch::empty({axis == 1 ? H : out_size, axis == 1 ? out_size : W, C}, torch::kUInt8);
  const uint8_t* src = img.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t OW = out.size(1);
  for (int64_t o = 0; o < out_size; ++o) {
    const int xmin = c.bounds[o * 2], n = c.bounds[o * 2 + 1];
    const int32_t* k = &c.k[o * c.ksize];
    const int64_t lines = axis == 1 ? H : W;
    for (int64_t line = 0; line < lines; ++line)
      for (int64_t ch = 0; ch < C; ++ch) {
        int64_t ss = int64_t(1) << (kPrecisionBits - 1);
        for (int x = 0; x < n; ++x) {
          int64_t i = xmin + x;
          int64_t idx = axis == 1 ? (line * W + i) * C + ch : (i * W + line) * C + ch;
          ss += static_cast<int64_t>(src[idx]) * k[x];
        }
        int64_t oidx = axis == 1 ? (line * OW + o) * C + ch : (o * OW + line) * C + ch;
        dst[oidx] = clip8(ss);
      }
  }
  return out;
}

void check_image(const torch::Tensor& t) {
  check(t.dim() == 3 && t.scalar_type() == torch::kUInt8 && t.size(0) > 0 && t.size(1) > 0,
        "image: expected uint8 [H,W,C], got ", t.sizes());
}

}  // namespace

torch::Tensor resize(const torch::Tensor& hwc, int64_t width, int64_t height, Filter filter) {
  check_image(hwc);
  check(width > 0 && height > 0, "resize: target size must be positive");
  torch::Tensor img = hwc.cpu().contiguous();
  if (width != img.size(1)) img = pass(img, 1, width, filter);    // horizontal first, as Pillow
  if (height != img.size(0)) img = pass(img, 0, height, filter);
  return img;
}

torch::Tensor adm_center_crop(const torch::Tensor& hwc, int64_t size) {
  check_image(hwc);
  torch::Tensor img = hwc;
  while (std::min(img.size(0), img.size(1)) >= 2 * size)
    img = resize(img, img.size(1) / 2, img.size(0) / 2, Filter::Box);
  double scale = static_cast<double>(size) / std::min(img.size(0), img.size(1));
  // Python's round() (half to even) on x * scale, as the reference does
  auto pyround = [](double v) { return static_cast<int64_t>(std::nearbyint(v)); };
  img = resize(img, pyround(img.size(1) * scale), pyround(img.size(0) * scale), Filter::Bicubic);
  int64_t y = (img.size(0) - size) / 2, x = (img.size(1) - size) / 2;
  return img.narrow(0, y, size).narrow(1, x, size).contiguous();
}

torch::Tensor hflip(const torch::Tensor& hwc) { return hwc.flip({1}).contiguous(); }

std::vector<torch::Tensor> ten_crop(const torch::Tensor& hwc, int64_t size) {
  const int64_t big = static_cast<int64_t>(std::nearbyint(size * 1.1));
  torch::Tensor img = hwc;
  while (std::min(img.size(0), img.size(1)) >= 2 * big)
    img = resize(img, img.size(1) / 2, img.size(0) / 2, Filter::Box);
  double scale = static_cast<double>(big) / std::min(img.size(0), img.size(1));
  img = resize(img, static_cast<int64_t>(std::nearbyint(img.size(1) * scale)),
               static_cast<int64_t>(std::nearbyint(img.size(0) * scale)), Filter::Bicubic);
  const int64_t H = img.size(0), W = img.size(1);
  std::vector<std::pair<int64_t, int64_t>> corners = {
      {0, 0}, {0, W - size}, {H - size, 0}, {H - size, W - size}, {(H - size) / 2, (W - size) / 2}};
  std::vector<torch::Tensor> out;
  for (auto [y, x] : corners) out.push_back(img.narrow(0, y, size).narrow(1, x, size).contiguous());
  for (int i = 0; i < 5; ++i) out.push_back(hflip(out[i]));
  return out;
}

torch::Tensor pad_to(const torch::Tensor& hwc, int64_t size, int value) {
  check_image(hwc);
  const int64_t H = hwc.size(0), W = hwc.size(1);
  if (H >= size && W >= size) return hwc;
  const int64_t top = std::max<int64_t>(0, (size - H) / 2), left = std::max<int64_t>(0, (size - W) / 2);
  auto out = torch::full({std::max(H, size), std::max(W, size), hwc.size(2)}, value, torch::kUInt8);
  out.narrow(0, top, H).narrow(1, left, W).copy_(hwc);
  return out;
}

}  // namespace rar::data
