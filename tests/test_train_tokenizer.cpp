// `rar train-tokenizer`: a tiny tokenizer trains (loss falls, dead codes restart), its output feeds
// `rar encode`, and a run stopped and resumed twice ends with exactly the weights of an
// uninterrupted run (CPU). Plus the l2-normalised quantizer and the one-line errors.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "helpers.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/vqgan.h"

using namespace rar;
using namespace rar::test;

namespace {

// 64 grayscale 8x8 images: four smooth patterns at random brightness.
std::string write_images(const TempDir& dir, int64_t side = 8) {
  torch::manual_seed(3);
  auto yy = torch::linspace(0, 1, side).view({side, 1}).expand({side, side});
  auto xx = torch::linspace(0, 1, side).view({1, side}).expand({side, side});
  std::vector<torch::Tensor> protos = {xx, yy, (xx + yy) / 2, ((xx - 0.5).pow(2) + (yy - 0.5).pow(2)) * 2};
  std::vector<torch::Tensor> imgs;
  for (int i = 0; i < 64; ++i) imgs.push_back(protos[i % 4] * (0.5 + 0.5 * torch::rand({1})));
  auto t = (torch::stack(imgs).clamp(0, 1) * 255).round().to(torch::kUInt8).unsqueeze(-1);
  const std::string path = dir / "images.npy";
  io::write_npy(path, t);
  return path;
}

std::string tiny_args(const std::string& images, const std::string& out, int64_t steps) {
  return "train-tokenizer --data " + images + " --test " + images + " --out " + out + " --device cpu --steps " +
         std::to_string(steps) +
         " model.vq_model.codebook_size=16 model.vq_model.token_size=4 model.vq_model.hidden_channels=8"
         " 'model.vq_model.channel_mult=[1, 2]' model.vq_model.num_res_blocks=1 model.vq_model.norm_groups=4"
         " data.pad=0 training.per_gpu_batch_size=8 lr_scheduler.params.warmup_steps=2"
         " experiment.log_every=1 experiment.eval_every=4 experiment.generate_every=4 experiment.save_every=4"
         " losses.dead_code_every=2 losses.dead_code_threshold=0.5";
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::string all = read_bytes(path);
  size_t b = 0;
  for (size_t e; (e = all.find('\n', b)) != std::string::npos; b = e + 1) rows.push_back(nlohmann::json::parse(all.substr(b, e - b)));
  return rows;
}

}  // namespace

TEST(TrainTokenizer, StopAndResumeEndWithTheSameWeights) {
  TempDir dir;
  const std::string images = write_images(dir);
  auto full = run_rar(tiny_args(images, dir / "full", 10));
  ASSERT_EQ(full.status, 0) << full.output;
  EXPECT_NE(full.output.find("test PSNR"), std::string::npos) << full.output;

  auto r1 = run_rar(tiny_args(images, dir / "split", 10) + " --stop-after 3");
  ASSERT_EQ(r1.status, 0) << r1.output;
  EXPECT_NE(r1.output.find("stopped at step 3"), std::string::npos) << r1.output;
  auto r2 = run_rar(tiny_args(images, dir / "split", 10) + " --resume --stop-after 4");
  ASSERT_EQ(r2.status, 0) << r2.output;
  EXPECT_NE(r2.output.find("resumed from"), std::string::npos) << r2.output;
  EXPECT_NE(r2.output.find("stopped at step 7"), std::string::npos) << r2.output;
  auto r3 = run_rar(tiny_args(images, dir / "split", 10) + " --resume");
  ASSERT_EQ(r3.status, 0) << r3.output;

  auto a = io::read_safetensors(dir / "full/tokenizer.safetensors");
  auto b = io::read_safetensors(dir / "split/tokenizer.safetensors");
  ASSERT_EQ(a.names(), b.names());
  for (const auto& n : a.names()) EXPECT_TRUE(a.at(n).equal(b.at(n))) << n;
  // The metrics log of the split run continues across the restarts: one training row per step.
  int64_t train_rows = 0;
  for (const auto& row : read_jsonl(dir / "split/metrics.jsonl")) train_rows += row.contains("loss");
  EXPECT_EQ(train_rows, 10);
  EXPECT_TRUE(path_exists(dir / "full/recon-00000004.png"));
  EXPECT_TRUE(path_exists(dir / "full/eval.json"));
  EXPECT_EQ(list_dir(dir / "full/checkpoints").size(), 2u);  // keep_last 2: steps 8 and 10
}

TEST(TrainTokenizer, LearnsRestartsDeadCodesAndFeedsEncode) {
  TempDir dir;
  const std::string images = write_images(dir);
  auto r = run_rar(tiny_args(images, dir / "run", 80) + " experiment.log_every=10 experiment.eval_every=0");
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<double> loss;
  int64_t restarted = 0;
  for (const auto& row : read_jsonl(dir / "run/metrics.jsonl"))
    if (row.contains("loss")) {
      loss.push_back(row["loss"].get<double>());
      restarted = row["codes_restarted"].get<int64_t>();
    }
  ASSERT_EQ(loss.size(), 8u);
  EXPECT_LT(loss.back(), 0.5 * loss.front()) << "loss did not fall";
  EXPECT_GT(restarted, 0) << "no dead code was restarted";
  auto summary = nlohmann::json::parse(read_bytes(dir / "run/eval.json"));
  EXPECT_GT(summary["test_psnr_db"].get<double>(), 15.0);

  // The trained tokenizer is a regular tokenizer for encode / reconstruct.
  auto enc = run_rar("encode --tokenizer " + dir / "run/tokenizer.safetensors" + " --images " + images + " --out " +
                     dir / "codes.npy --device cpu");
  ASSERT_EQ(enc.status, 0) << enc.output;
  auto codes = io::read_npy(dir / "codes.npy");
  EXPECT_EQ(codes.sizes(), (std::vector<int64_t>{64, 16}));
  EXPECT_GE(codes.min().item<int64_t>(), 0);
  EXPECT_LT(codes.max().item<int64_t>(), 16);
  auto rec = run_rar("reconstruct --tokenizer " + dir / "run/tokenizer.safetensors" + " --images " + images +
                     " --device cpu");
  ASSERT_EQ(rec.status, 0) << rec.output;
  EXPECT_NE(rec.output.find("PSNR"), std::string::npos);
}

TEST(TrainTokenizer, BadSettingsAreOneLineErrors) {
  TempDir dir;
  const std::string images = write_images(dir, 6);
  auto r = run_rar(tiny_args(images, dir / "x", 2) + " 'model.vq_model.channel_mult=[1, 2, 2]'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("not a multiple of 4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("data.pad"), std::string::npos) << r.output;
  r = run_rar(tiny_args(images, dir / "x", 2) + " losses.reconstrction=l1");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no key 'losses.reconstrction'"), std::string::npos) << r.output;
  r = run_rar(tiny_args(images, dir / "x", 2) + " data.pad=8 losses.reconstruction=l3");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("expected l1, l2 or l1+l2"), std::string::npos) << r.output;
  r = run_rar("train-tokenizer --print-config training.max_train_steps=123");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("max_train_steps: 123"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("learning_rate: 0.001"), std::string::npos) << r.output;  // ${...} resolved
}

TEST(Quantizer, L2NormalisedCodesPickTheMostSimilarDirection) {
  torch::manual_seed(5);
  model::Quantizer q(8, 4, /*l2=*/true);
  auto z = torch::randn({2, 4, 3, 3}) * 5;
  auto codes = q->codes_of(z);
  auto zn = torch::nn::functional::normalize(z.permute({0, 2, 3, 1}).reshape({-1, 4}),
                                             torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto en = torch::nn::functional::normalize(q->embedding->weight, torch::nn::functional::NormalizeFuncOptions().dim(1));
  EXPECT_TRUE(codes.flatten().equal(zn.matmul(en.t()).argmax(1)));
  auto v = q->vectors_of(codes);  // unit vectors
  EXPECT_TRUE(torch::allclose(v.pow(2).sum(1), torch::ones({2, 3, 3}), 1e-5, 1e-5));
}
