// Image preprocessing: Pillow-exact resizing (BOX, BICUBIC), the ADM center crop, flips, ten-crop
// and padding. Expected arrays come from Pillow itself (tests/data/make_pil_fixtures.py).
#include <torch/torch.h>

#include "data/transforms.h"
#include "helpers.h"
#include "io/npy.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;

namespace {
torch::Tensor pil(const std::string& name) {
  for (auto& [n, t] : io::read_npz(fixture("pil_resize.npz")))
    if (n == name) return t;
  ADD_FAILURE() << "no fixture " << name;
  return {};
}
void expect_same(const torch::Tensor& got, const torch::Tensor& want, const char* what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  auto diff = (got.to(torch::kInt32) - want.to(torch::kInt32)).abs();
  EXPECT_EQ(diff.max().item<int>(), 0) << what << ": " << diff.gt(0).sum().item<int64_t>() << " bytes differ";
}
}  // namespace

TEST(Transforms, ResizeMatchesPillowExactly) {
  auto src = pil("src");
  expect_same(data::resize(src, 71, 45, data::Filter::Bicubic), pil("bicubic_up"), "bicubic up");
  expect_same(data::resize(src, 19, 13, data::Filter::Bicubic), pil("bicubic_down"), "bicubic down");
  expect_same(data::resize(src, 26, 18, data::Filter::Box), pil("box_half"), "box half");
  expect_same(data::resize(src.select(2, 0).unsqueeze(2), 30, 22, data::Filter::Bicubic), pil("grey_bicubic"), "grey");
}

TEST(Transforms, AdmCenterCropMatchesReference) {
  auto src = pil("src");
  expect_same(data::adm_center_crop(src, 16), pil("adm_16"), "adm 16");  // halves once (37 >= 32), then bicubic
  expect_same(data::adm_center_crop(src, 8), pil("adm_8"), "adm 8");     // halves twice
}

TEST(Transforms, HandComputedCases) {
  // Box-halving a 2x2 block: rows first into 8 bits, rounding half up: (10+20)/2 = 15,
  // (30+41)/2 = 35.5 -> 36; then the column: (15+36)/2 = 25.5 -> 26 (not the exact mean 25.25).
  auto img = torch::tensor({10, 20, 30, 41}, torch::kUInt8).view({2, 2, 1});
  EXPECT_EQ(data::resize(img, 1, 1, data::Filter::Box).item<uint8_t>(), 26);
  // Resizing to the same size is the identity; a constant image stays constant under bicubic.
  auto c = torch::full({5, 7, 3}, 77, torch::kUInt8);
  EXPECT_TRUE(data::resize(c, 7, 5, data::Filter::Bicubic).equal(c));
  EXPECT_TRUE(data::resize(c, 13, 3, data::Filter::Bicubic).eq(77).all().item<bool>());
}

TEST(Transforms, FlipTenCropAndPad) {
  auto src = pil("src");
  EXPECT_TRUE(data::hflip(data::hflip(src)).equal(src));
  EXPECT_EQ(data::hflip(src)[0][0][0].item<uint8_t>(), src[0][52][0].item<uint8_t>());
  auto crops = data::ten_crop(src, 16);
  ASSERT_EQ(crops.size(), 10u);
  for (auto& c : crops) EXPECT_EQ(c.sizes(), (std::vector<int64_t>{16, 16, 3}));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(crops[i + 5].equal(data::hflip(crops[i])));
  auto small = torch::full({28, 28, 1}, 9, torch::kUInt8);
  auto padded = data::pad_to(small, 32);
  EXPECT_EQ(padded.sizes(), (std::vector<int64_t>{32, 32, 1}));
  EXPECT_EQ(padded[0][0][0].item<uint8_t>(), 0);
  EXPECT_EQ(padded[2][2][0].item<uint8_t>(), 9);
  EXPECT_RAR_ERROR(data::resize(torch::zeros({4, 4}, torch::kUInt8), 2, 2, data::Filter::Box), "expected uint8 [H,W,C]");
}
