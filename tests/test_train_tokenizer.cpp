// `rar train-tokenizer`: a tiny tokenizer trains (loss falls, dead codes restart), its output feeds
// `rar encode`, and a run stopped and resumed twice ends with exactly the weights of an
// uninterrupted run (CPU). Plus the l2-normalised quantizer and the one-line errors.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "helpers.h"
#include "small_step.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/vqgan.h"
#include "training/optim_config.h"
#include "training/vq_objective.h"

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

// training.max_minutes ends a run like the end of its schedule (checkpoint, final evaluation,
// reconstruction grid), and --resume continues it to the same weights as an uninterrupted run.
TEST(TrainTokenizer, TimeBudgetEndsLikeTheScheduleAndResumeContinues) {
  TempDir dir;
  const std::string images = write_images(dir);
  auto full = run_rar(tiny_args(images, dir / "full", 6));
  ASSERT_EQ(full.status, 0) << full.output;
  // a budget of 0.06 µs runs out at once: before the first step or, on a fast clock, soon after
  auto cut = run_rar(tiny_args(images, dir / "cut", 6) + " training.max_minutes=1e-9");
  ASSERT_EQ(cut.status, 0) << cut.output;
  const size_t at = cut.output.find("reached at step ");
  ASSERT_NE(at, std::string::npos) << cut.output;
  const int64_t k = std::stoll(cut.output.substr(at + 16));
  ASSERT_LT(k, 6) << cut.output;
  EXPECT_NE(cut.output.find("test PSNR"), std::string::npos) << cut.output;
  EXPECT_TRUE(path_exists(dir / "cut/eval.json"));
  char name[64];
  std::snprintf(name, sizeof name, "cut/recon-%08lld.png", (long long)k);
  EXPECT_TRUE(path_exists(dir / name)) << name;
  std::snprintf(name, sizeof name, "cut/checkpoints/step-%08lld/trainer.json", (long long)k);
  EXPECT_TRUE(path_exists(dir / name)) << name;
  int64_t final_rows = 0;
  for (const auto& row : read_jsonl(dir / "cut/metrics.jsonl"))
    if (row.contains("minutes")) {
      ++final_rows;
      EXPECT_EQ(row["step"].get<int64_t>(), k);
    }
  EXPECT_EQ(final_rows, 1);

  auto rest = run_rar(tiny_args(images, dir / "cut", 6) + " --resume");
  ASSERT_EQ(rest.status, 0) << rest.output;
  EXPECT_NE(rest.output.find("finished at step 6"), std::string::npos) << rest.output;
  auto a = io::read_safetensors(dir / "full/tokenizer.safetensors");
  auto b = io::read_safetensors(dir / "cut/tokenizer.safetensors");
  for (const auto& n : a.names()) EXPECT_TRUE(a.at(n).equal(b.at(n))) << n;
}

namespace {

model::VQModel tiny_vq_model() { return model::VQModel(test_support::tiny_vq_config()); }

// Largest absolute gradient over a module's parameters (0 when none has one).
double max_grad(torch::nn::Module& m) {
  double g = 0;
  for (auto& p : m.parameters())
    if (p.grad().defined()) g = std::max(g, p.grad().abs().max().item<double>());
  return g;
}

}  // namespace

// The objective of vq_objective.h, term by term against an independent computation, and its
// stop-gradients: the codebook term moves only the codes, the commitment term only the encoder,
// and the reconstruction reaches the encoder through the straight-through estimator but not the codes.
TEST(VqObjective, LossIsTheWeightedSumAndGradientsFollowTheStopGradients) {
  torch::manual_seed(5);
  auto vq = tiny_vq_model();
  auto x = torch::rand({4, 1, 8, 8});
  auto z = training::vq_encode(vq, x, false);
  ASSERT_EQ(z.z_flat.sizes(), (std::vector<int64_t>{4 * 4 * 4, 4}));  // 4 images of 4x4 positions, code dim 4
  training::init_codebook(vq, z.z_flat);

  const training::VqLossWeights w{"l1+l2", 0.7, 1.3, 0.25};
  auto l = training::vq_loss(vq, z, x, w, false);
  // independently: nearest codes by squared distance, the quantised grid through the decoder
  torch::NoGradGuard ng;
  auto e = vq->quantize->codebook();
  auto codes = (z.z_flat.unsqueeze(1) - e.unsqueeze(0)).pow(2).sum(-1).argmin(1);
  ASSERT_TRUE(l.codes.equal(codes));
  auto zq = e.index_select(0, codes);
  const double sq = (zq - z.z_flat).pow(2).mean().item<double>();
  auto recon = vq->decoder(zq.view({4, 4, 4, 4}).permute({0, 3, 1, 2}));
  const double rec = ((recon - x).abs().mean() + (recon - x).pow(2).mean()).item<double>();
  EXPECT_NEAR(l.codebook.item<double>(), sq, 1e-6);
  EXPECT_NEAR(l.commitment.item<double>(), sq, 1e-6);
  EXPECT_NEAR(l.reconstruction.item<double>(), rec, 1e-5);
  EXPECT_NEAR(l.loss.item<double>(), 0.7 * rec + 1.3 * sq + 0.25 * sq, 1e-5);
}

TEST(VqObjective, EachTermMovesOnlyWhatItShould) {
  torch::manual_seed(6);
  auto vq = tiny_vq_model();
  auto x = torch::rand({4, 1, 8, 8});
  training::init_codebook(vq, training::vq_encode(vq, x, false).z_flat.detach());
  struct Case {
    training::VqLossWeights w;
    bool encoder, decoder, codes;
  };
  for (const Case& c : {Case{{"l2", 0, 1, 0}, false, false, true},    // codebook term: the codes only
                        Case{{"l2", 0, 0, 1}, true, false, false},    // commitment: the encoder only
                        Case{{"l1", 1, 0, 0}, true, true, false}}) {  // reconstruction: straight through
    vq->zero_grad();
    training::vq_loss(vq, training::vq_encode(vq, x, false), x, c.w, false).loss.backward();
    const std::string what = "weights " + std::to_string(c.w.reconstruction_weight) + "/" +
                             std::to_string(c.w.codebook_weight) + "/" + std::to_string(c.w.commitment);
    EXPECT_EQ(max_grad(*vq->encoder) > 0, c.encoder) << what;
    EXPECT_EQ(max_grad(*vq->decoder) > 0, c.decoder) << what;
    EXPECT_EQ(max_grad(*vq->quantize) > 0, c.codes) << what;
  }
}

TEST(VqObjective, DeadCodesRestartOnEncoderOutputs) {
  torch::manual_seed(7);
  auto vq = tiny_vq_model();
  training::AdamW opt(training::named_parameters(*vq), training::AdamWOptions{});
  training::CodeUsage usage(16, 0.0, torch::kCPU);  // decay 0: the shares are the last batch's
  usage.add(torch::zeros({64}, torch::kInt64));     // every position on code 0: 15 codes dead
  auto z = torch::randn({64, 4}) * 100;             // far from every code
  const int64_t restarted = usage.restart_dead(vq, opt, z, 0.5);
  EXPECT_EQ(restarted, 15);
  auto w = vq->quantize->embedding->weight.detach();
  // each restarted code sits within 0.01-scale noise of one of the encoder outputs
  for (int64_t k = 1; k < 16; ++k) {
    const double d = (z - w[k]).pow(2).sum(1).min().sqrt().item<double>();
    EXPECT_LT(d, 0.2) << k;
  }
  EXPECT_LT(w[0].abs().max().item<double>(), 10.0);  // the live code stays
  EXPECT_NEAR(usage.shares()[1].item<double>(), 1.0 / 16, 1e-7);
}
