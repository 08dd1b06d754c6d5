// PNG/JPEG reading and writing, grids, and corrupted files.
#include <torch/torch.h>

#include <map>

#include "helpers.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/plot.h"
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

TEST(Plot, CurvesFromAMetricsLogAndOneLineErrors) {
  if (!io::plotting_available()) GTEST_SKIP() << "built without cairo";
  TempDir dir;
  std::string log;
  for (int s = 1; s <= 20; ++s)
    log += "{\"step\": " + std::to_string(s) + ", \"loss\": " + std::to_string(5.0 / s) + ", \"lr\": 0.001, \"randomness\": " +
           std::to_string(s < 10 ? 1.0 : 0.0) + "}\n";
  log += "{\"step\": 20, \"val/nll\": 0.3}\n";
  write_bytes(dir / "metrics.jsonl", log);
  auto r = run_rar("plot " + dir / "metrics.jsonl" + " --out " + dir / "curves.png");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("3 panels"), std::string::npos) << r.output;  // loss(+val), lr, r
  auto img = io::read_image(dir / "curves.png");
  EXPECT_EQ(img.size(0), 600);   // 2 rows of 300 px
  EXPECT_EQ(img.size(1), 1040);  // 2 columns of 520 px
  EXPECT_GT(img.to(torch::kFloat32).std().item<double>(), 1.0);  // something was drawn
  write_bytes(dir / "bad.jsonl", "{\"step\": 1, \"loss\": 2}\nnot json\n");
  r = run_rar("plot " + dir / "bad.jsonl" + " --out " + dir / "x.png");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("bad.jsonl:2: not a JSON object"), std::string::npos) << r.output;
  r = run_rar("plot " + dir / "metrics.jsonl" + " --out " + dir / "x.png --keys loss,nope");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no key 'nope'"), std::string::npos) << r.output;
  // several logs: the runs in the same panels; a panel needs the key in one of them at least
  write_bytes(dir / "b-metrics.jsonl", "{\"step\": 1, \"loss\": 4}\n{\"step\": 20, \"loss\": 1, \"val/nll\": 0.5}\n");
  r = run_rar("plot " + dir / "metrics.jsonl " + dir / "b-metrics.jsonl --out " + dir / "two.png --keys val/nll,lr");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("2 panels"), std::string::npos) << r.output;
  auto two = io::read_image(dir / "two.png");
  EXPECT_EQ(two.size(1), 1040);
  r = run_rar("plot " + dir / "metrics.jsonl " + dir / "b-metrics.jsonl --out " + dir / "x.png --labels one");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--labels: 1 names for 2 logs"), std::string::npos) << r.output;
  r = run_rar("plot " + dir / "metrics.jsonl " + dir / "b-metrics.jsonl --out " + dir / "x.png --keys nope");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("the logs: no key 'nope'"), std::string::npos) << r.output;
}

TEST(Plot, LabelledGridRows) {
  if (!io::plotting_available()) GTEST_SKIP() << "built without cairo";
  TempDir dir;
  auto grid = torch::zeros({40, 60, 1}, torch::kUInt8);
  io::write_labelled_rows_png(dir / "g.png", grid, {"T-shirt/top", "Trouser"});
  auto img = io::read_image(dir / "g.png");
  EXPECT_EQ(img.size(0), 40);
  EXPECT_GT(img.size(1), 60);  // the label margin
  // The grid itself (black) sits right of the margin; the margin holds some dark text pixels.
  EXPECT_EQ(img.narrow(1, img.size(1) - 60, 60).max().item<int>(), 0);
  EXPECT_LT(img.narrow(1, 0, img.size(1) - 60).to(torch::kFloat32).min().item<float>(), 128.0f);
}

// Decoding as Pillow's Image.open(f).convert("RGB") (grey: "L") does, against Pillow's own output
// (tests/data/make_image_fixtures.py): 16-bit samples reduced to their high byte, alpha and tRNS
// transparency dropped rather than composited, sub-byte grey expanded, and a CMYK JPEG (Adobe,
// inverted) converted with Pillow's formula; a 16-bit grey PNG is v >> 8 (Pillow would clip it).
TEST(Image, DecodesLikePillow) {
  auto cases = io::read_npz(fixture("pil_decode.npz"));
  std::map<std::string, torch::Tensor> by;
  for (auto& [k, v] : cases) by[k] = v;
  int n = 0;
  for (const auto& [k, file] : by) {
    if (k.size() < 5 || k.substr(k.size() - 5) != "_file") continue;
    const std::string name = k.substr(0, k.size() - 5);
    const auto& want = by.at(name + "_expected");
    const std::string bytes(reinterpret_cast<const char*>(file.data_ptr<uint8_t>()), static_cast<size_t>(file.numel()));
    auto got = io::decode_image(bytes, name);
    ASSERT_EQ(got.sizes(), want.sizes()) << name;
    const auto diff = (got.to(torch::kInt32) - want.to(torch::kInt32)).abs().max().item<int>();
    EXPECT_EQ(diff, 0) << name;
    ++n;
  }
  EXPECT_EQ(n, 8);
}
