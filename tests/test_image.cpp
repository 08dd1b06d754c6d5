// PNG/JPEG reading and writing, grids, and corrupted files.
#include <torch/torch.h>

#include "helpers.h"
#include "io/image.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;

TEST(Image, PngRoundTripIsExactForGreyAndRgb) {
  TempDir dir;
  for (int64_t c : {1, 3}) {
    auto img = torch::randint(0, 256, {17, 23, c}).to(torch::kUInt8);
    io::write_image(dir / "a.png", img);
    EXPECT_TRUE(io::read_image(dir / "a.png").equal(img)) << c;
  }
}

TEST(Image, JpegRoundTripIsClose) {
  TempDir dir;
  auto ramp = torch::arange(64, torch::kFloat32).mul(4).view({1, 64, 1}).expand({48, 64, 3}).contiguous();
  auto img = ramp.to(torch::kUInt8);
  io::write_image(dir / "a.jpg", img, 95);
  auto back = io::read_image(dir / "a.jpg");
  ASSERT_EQ(back.sizes(), img.sizes());
  EXPECT_LT((back.to(torch::kFloat32) - ramp).abs().mean().item<float>(), 2.0f);
}

TEST(Image, GridLayout) {
  auto images = torch::zeros({5, 3, 4, 4});
  images[4].fill_(1.0);
  auto grid = io::make_grid(images, 2, 1, 128);
  EXPECT_EQ(grid.sizes(), (std::vector<int64_t>{3 * 5 + 1, 2 * 5 + 1, 3}));
  EXPECT_EQ(grid[0][0][0].item<uint8_t>(), 128);                 // padding
  EXPECT_EQ(grid[1][1][0].item<uint8_t>(), 0);                   // tile 0
  EXPECT_EQ(grid[11][1][0].item<uint8_t>(), 255);                // tile 4 (row 2, col 0)
  EXPECT_EQ(grid[11][6][0].item<uint8_t>(), 128);                // empty slot stays padding
  EXPECT_TRUE(io::to_uint8_nhwc(torch::full({1, 1, 1, 1}, 0.5)).equal(torch::full({1, 1, 1, 1}, 128).to(torch::kUInt8)));
}

TEST(Image, BadFilesGiveOneLineErrors) {
  TempDir dir;
  io::write_image(dir / "a.png", torch::zeros({8, 8, 3}, torch::kUInt8));
  std::string png = read_bytes(dir / "a.png");
  write_bytes(dir / "trunc.png", png.substr(0, png.size() / 2));
  EXPECT_RAR_ERROR(io::read_image(dir / "trunc.png"), "bad PNG");
  io::write_image(dir / "a.jpg", torch::zeros({8, 8, 3}, torch::kUInt8));
  std::string jpg = read_bytes(dir / "a.jpg");
  write_bytes(dir / "trunc.jpg", jpg.substr(0, 40));
  EXPECT_RAR_ERROR(io::read_image(dir / "trunc.jpg"), "bad JPEG");
  write_bytes(dir / "x.png", "hello world");
  EXPECT_RAR_ERROR(io::read_image(dir / "x.png"), "not a PNG or JPEG file");
  EXPECT_RAR_ERROR(io::write_image(dir / "a.bmp", torch::zeros({8, 8, 3}, torch::kUInt8)), "unknown image extension");
  EXPECT_RAR_ERROR(io::write_image(dir / "a.png", torch::zeros({8, 8, 2}, torch::kUInt8)), "expected a uint8 image");
}
