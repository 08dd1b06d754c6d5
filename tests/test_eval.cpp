// Evaluation: the Fréchet distance against closed forms, the Inception Score's extremes, the FID
// Inception network with random weights under the official key names (shapes, determinism, batch
// invariance, strict loading), and `rar eval fid|stats` end to end.
#include <cmath>
#include <map>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "eval/adm.h"
#include "eval/fid.h"
#include "eval/nearest.h"
#include "eval/inception.h"
#include "helpers.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;

namespace {
eval::FeatureStats stats(std::vector<double> mu, torch::Tensor sigma) {
  eval::FeatureStats s;
  s.mu = torch::tensor(mu, torch::kFloat64);
  s.sigma = sigma.to(torch::kFloat64);
  s.count = 10;
  return s;
}
}  // namespace

TEST(Frechet, ClosedFormCases) {
  auto a = stats({1, 2}, torch::diag(torch::tensor({4.0, 9.0})));
  auto b = stats({0, 0}, torch::eye(2));
  EXPECT_NEAR(eval::frechet_distance(a, a), 0.0, 1e-9);
  EXPECT_NEAR(eval::frechet_distance(a, b), 5.0 + 1.0 + 4.0, 1e-9);  // |Δμ|² + Σ(√σ1 − √σ2)²
  // Non-commuting 2x2: tr √(S1 S2) = √(tr(S1 S2) + 2 √det(S1 S2)).
  auto s1 = stats({0, 0}, torch::tensor({{2.0, 1.0}, {1.0, 2.0}}));
  auto s2 = stats({0, 0}, torch::tensor({{1.0, 0.0}, {0.0, 3.0}}));
  EXPECT_NEAR(eval::frechet_distance(s1, s2), 4 + 4 - 2 * std::sqrt(14.0), 1e-9);
  // High dimension: symmetric, and Σ2 = c²Σ1 gives tr(Σ1)(1 − c)².
  torch::manual_seed(0);
  auto m = torch::randn({64, 64}, torch::kFloat64);
  auto sig = m.matmul(m.t()) / 64 + 1e-3 * torch::eye(64, torch::kFloat64);
  eval::FeatureStats x{torch::zeros({64}, torch::kFloat64), sig, 100}, y{torch::zeros({64}, torch::kFloat64), 2.25 * sig, 100};
  EXPECT_NEAR(eval::frechet_distance(x, y), sig.trace().item<double>() * 0.25, 1e-8 * sig.trace().item<double>());
  auto z = stats(std::vector<double>(64, 0.5), torch::eye(64, torch::kFloat64) * 2);
  EXPECT_NEAR(eval::frechet_distance(x, z), eval::frechet_distance(z, x), 1e-8);
  // A rank-deficient covariance (fewer samples than dimensions) stays finite.
  auto few = eval::feature_stats(torch::randn({5, 64}));
  EXPECT_TRUE(std::isfinite(eval::frechet_distance(few, x)));
  EXPECT_RAR_ERROR(eval::frechet_distance(a, x), "statistics of different sizes");
}

TEST(Frechet, StatsAreMeanAndUnbiasedCovariance) {
  auto f = torch::tensor({{1.0, 2.0}, {3.0, 6.0}, {5.0, 4.0}});
  auto s = eval::feature_stats(f);
  EXPECT_TRUE(torch::allclose(s.mu, torch::tensor({3.0, 4.0}, torch::kFloat64)));
  // numpy.cov(f, rowvar=False): [[4, 2], [2, 4]]
  EXPECT_TRUE(torch::allclose(s.sigma, torch::tensor({{4.0, 2.0}, {2.0, 4.0}}, torch::kFloat64)));
  EXPECT_RAR_ERROR(eval::feature_stats(torch::zeros({1, 3})), "at least 2 feature rows");
  TempDir dir;
  eval::write_stats(dir / "s.npz", s);
  EXPECT_TRUE(eval::npz_has_stats(dir / "s.npz"));
  auto back = eval::read_stats(dir / "s.npz");
  EXPECT_TRUE(back.sigma.equal(s.sigma));
  io::write_npz(dir / "bad.npz", {{"mu", torch::zeros({3})}, {"sigma", torch::zeros({2, 2})}});
  EXPECT_RAR_ERROR(eval::read_stats(dir / "bad.npz"), "'mu' must be [D] and 'sigma' [D,D]");
}

// The bootstrap spread of an FID: positive, repeatable for a seed, and shrinking as the sample set
// grows (16x the samples: well under half the spread).
TEST(Frechet, BootstrapSpreadShrinksWithMoreSamples) {
  torch::manual_seed(2);
  const auto f64 = torch::kFloat64;
  auto ref = eval::feature_stats(torch::randn({4000, 6}, f64));
  auto small = torch::randn({500, 6}, f64), large = torch::randn({8000, 6}, f64);
  const double s1 = eval::frechet_bootstrap_sd(small, ref, 50, 1), s2 = eval::frechet_bootstrap_sd(large, ref, 50, 1);
  EXPECT_GT(s1, 0.0);
  EXPECT_LT(s2, s1 / 2);
  EXPECT_EQ(s1, eval::frechet_bootstrap_sd(small, ref, 50, 1));
  EXPECT_NE(s1, eval::frechet_bootstrap_sd(small, ref, 50, 2));
  EXPECT_RAR_ERROR(eval::frechet_bootstrap_sd(small, ref, 1), "at least 2 resamples");
}

TEST(InceptionScore, UniformIsOneAndConfidentEvenIsTheClassCount) {
  auto [u, us] = eval::inception_score(torch::zeros({100, 1008}), 10);
  EXPECT_NEAR(u, 1.0, 1e-9);
  EXPECT_NEAR(us, 0.0, 1e-9);
  auto logits = torch::full({200, 10}, -50.0);
  for (int64_t i = 0; i < 200; ++i) logits[i][i % 10] = 50.0;
  auto [c, cs] = eval::inception_score(logits, 10);
  EXPECT_NEAR(c, 10.0, 1e-6);
}

TEST(FidInception, RandomWeightsShapesDeterminismBatchInvarianceAndStrictLoading) {
  torch::manual_seed(1);
  eval::FidInception net;
  net->eval();
  torch::NoGradGuard ng;
  auto names = model::state_dict_of(*net).names();
  for (const char* key : {"Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Mixed_5b.branch5x5_2.conv.weight",
                          "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7a.branch7x7x3_4.conv.weight",
                          "Mixed_7c.branch3x3dbl_3b.bn.weight", "fc.weight", "fc.bias"})
    EXPECT_NE(std::find(names.begin(), names.end(), key), names.end()) << key;
  auto x = torch::rand({3, 3, 40, 40});
  auto f = net->pool3(x);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{3, 2048}));
  EXPECT_EQ(net->logits(f).sizes(), (std::vector<int64_t>{3, 1008}));
  EXPECT_TRUE(net->pool3(x).equal(f));                                       // deterministic
  EXPECT_TRUE(torch::allclose(net->pool3(x.narrow(0, 1, 1)), f.narrow(0, 1, 1), 1e-5, 1e-6));  // batch-invariant
  EXPECT_GE(f.min().item<float>(), 0.0f);                                    // after ReLU + mean pool
  // Round trip through safetensors under the official names, strictly.
  TempDir dir;
  auto sd = model::state_dict_of(*net);
  io::write_safetensors(dir / "inception.safetensors", sd);
  auto loaded = eval::load_fid_inception(dir / "inception.safetensors", torch::kCPU);
  EXPECT_TRUE(torch::allclose(loaded->pool3(x), f, 1e-6, 1e-6));
  io::StateDict partial;
  for (const auto& n : sd.names())
    if (n != "fc.bias") partial.set(n, sd.at(n));
  io::write_safetensors(dir / "partial.safetensors", partial);
  EXPECT_RAR_ERROR(eval::load_fid_inception(dir / "partial.safetensors", torch::kCPU), "fc.bias");
}

TEST(CliEval, FidFromStatsAndFromImagesAgainstTheirOwnStats) {
  TempDir dir;
  eval::write_stats(dir / "a.npz", stats({1, 2}, torch::diag(torch::tensor({4.0, 9.0}))));
  eval::write_stats(dir / "b.npz", stats({0, 0}, torch::eye(2)));
  auto r = run_rar("eval fid --samples " + dir / "a.npz" + " --ref " + dir / "b.npz");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("FID 10.0000"), std::string::npos) << r.output;

  // Random-weight network: the statistics of 6 images, then FID of the same images against them ~ 0.
  torch::manual_seed(2);
  eval::FidInception net;
  io::write_safetensors(dir / "inc.safetensors", model::state_dict_of(*net));
  auto imgs = torch::randint(0, 256, {6, 32, 32, 3}).to(torch::kUInt8);
  io::write_npz(dir / "imgs.npz", {{"arr_0", imgs}, {"arr_1", torch::zeros({6}, torch::kInt64)}});
  r = run_rar("eval stats --samples " + dir / "imgs.npz" + " --out " + dir / "st.npz --inception " +
              dir / "inc.safetensors --device cpu");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_rar("eval fid --samples " + dir / "imgs.npz" + " --ref " + dir / "st.npz --inception " +
              dir / "inc.safetensors --device cpu");
  ASSERT_EQ(r.status, 0) << r.output;
  double fid = -1;
  ASSERT_EQ(std::sscanf(r.output.c_str() + r.output.find("FID "), "FID %lf", &fid), 1) << r.output;
  EXPECT_NEAR(fid, 0.0, 1e-3);
  r = run_rar("eval fid --samples " + dir / "imgs.npz" + " --ref " + dir / "st.npz");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("FID Inception weights are needed"), std::string::npos) << r.output;
}

// Nearest training image: the chunked float32 search finds the brute-force float64 neighbour's
// distance (every chunk size, duplicates of a training row at distance 0), and the copy share
// counts the samples under the held-out images' quantile.
TEST(NearestImages, DistancesAndCopyShare) {
  torch::manual_seed(8);
  auto base = torch::rand({300, 48});
  auto query = torch::cat({torch::rand({37, 48}), base.narrow(0, 5, 3)});
  auto brute = torch::cdist(query.to(torch::kFloat64), base.to(torch::kFloat64)).amin(1);
  for (int64_t chunk : {1, 7, 1024}) {
    auto d = eval::nearest_distances(query, base, torch::kCPU, chunk);
    ASSERT_EQ(d.sizes(), (std::vector<int64_t>{40}));
    EXPECT_TRUE(torch::allclose(d, brute, 1e-9, 1e-12)) << "chunk " << chunk;
    EXPECT_EQ(d.narrow(0, 37, 3).abs().max().item<double>(), 0.0);
  }
  EXPECT_RAR_ERROR(eval::nearest_distances(query, torch::rand({3, 47}), torch::kCPU), "different image sizes");
  auto heldout = torch::arange(1, 101, torch::kFloat64);  // 1..100: the 1% quantile is 2
  auto r = eval::copy_report(torch::tensor({0.5, 1.5, 3.0, 50.0}, torch::kFloat64), heldout);
  EXPECT_DOUBLE_EQ(r.threshold, 2.0);
  EXPECT_DOUBLE_EQ(r.copies, 0.5);
  EXPECT_DOUBLE_EQ(r.heldout_median, 51.0);
  EXPECT_DOUBLE_EQ(r.sample_median, 3.0);  // the upper median of an even count
  EXPECT_DOUBLE_EQ(eval::copy_report(heldout, heldout).copies, 0.01);  // held-out images themselves: the quantile
}

TEST(Classifier, TrainsOnPatternsAndScoresSamples) {
  TempDir dir;
  // 4 classes of 8x8 patterns with noise; labels in a sibling .npy.
  torch::manual_seed(3);
  auto yy = torch::linspace(0, 1, 8).view({8, 1}).expand({8, 8});
  auto xx = torch::linspace(0, 1, 8).view({1, 8}).expand({8, 8});
  auto blob = 1 - ((xx - 0.5).pow(2) + (yy - 0.5).pow(2)) * 4;  // patterns that survive horizontal flips
  std::vector<torch::Tensor> protos = {yy, 1 - yy, blob.clamp(0, 1), (1 - blob).clamp(0, 1)};
  std::vector<torch::Tensor> imgs;
  std::vector<int64_t> labels;
  for (int i = 0; i < 128; ++i) {
    imgs.push_back((protos[i % 4] + 0.1 * torch::randn({8, 8})).clamp(0, 1));
    labels.push_back(i % 4);
  }
  auto u8 = (torch::stack(imgs) * 255).round().to(torch::kUInt8).unsqueeze(-1);
  auto lab = torch::tensor(labels, torch::kInt64);
  io::write_npz(dir / "train.npz", {{"arr_0", u8}, {"arr_1", lab}});
  auto r = run_rar("train-classifier --data " + dir / "train.npz" + " --test " + dir / "train.npz" + " --out " +
                   dir / "c.safetensors --steps 60 --batch 32 --width 4 --device cpu");
  ASSERT_EQ(r.status, 0) << r.output;
  double acc = 0;
  ASSERT_EQ(std::sscanf(r.output.c_str() + r.output.find("test accuracy"), "test accuracy %lf", &acc), 1) << r.output;
  EXPECT_GT(acc, 90.0);
  // "Samples" with their conditioning labels: the same images, half of them mislabelled.
  auto wrong = lab.clone();
  wrong.narrow(0, 0, 64).add_(1).remainder_(4);
  io::write_npz(dir / "samples.npz", {{"arr_0", u8}, {"arr_1", wrong}});
  r = run_rar("eval classify --classifier " + dir / "c.safetensors" + " --samples " + dir / "samples.npz" + " --ref " +
              dir / "train.npz --device cpu");
  ASSERT_EQ(r.status, 0) << r.output;
  double sacc = 0, fid = -1;
  ASSERT_EQ(std::sscanf(r.output.c_str() + r.output.find("accuracy"), "accuracy %lf", &sacc), 1) << r.output;
  EXPECT_NEAR(sacc, acc / 2, 10.0);  // the mislabelled half counts as misses
  ASSERT_EQ(std::sscanf(r.output.c_str() + r.output.find("feature-FID"), "feature-FID %lf", &fid), 1) << r.output;
  EXPECT_NEAR(fid, 0.0, 1e-6);  // same images on both sides
  // the memorisation check: the training images themselves as "samples" all sit at distance 0,
  // nearer than any fresh draw of the same patterns (the held-out reference); fresh draws do not
  std::vector<torch::Tensor> fresh;
  for (int i = 0; i < 256; ++i) fresh.push_back((protos[i % 4] + 0.1 * torch::randn({8, 8})).clamp(0, 1));
  auto fresh_u8 = (torch::stack(fresh) * 255).round().to(torch::kUInt8).unsqueeze(-1);
  auto fresh_lab = torch::arange(256, torch::kInt64).remainder(4);
  io::write_npz(dir / "heldout.npz", {{"arr_0", fresh_u8.narrow(0, 0, 128)}, {"arr_1", fresh_lab.narrow(0, 0, 128)}});
  io::write_npz(dir / "fresh.npz", {{"arr_0", fresh_u8.narrow(0, 128, 128)}, {"arr_1", fresh_lab.narrow(0, 128, 128)}});
  for (auto [samples, expect] : std::vector<std::pair<std::string, double>>{{"train.npz", 100.0}, {"fresh.npz", 1.0}}) {
    r = run_rar("eval classify --classifier " + dir / "c.safetensors" + " --samples " + dir / samples + " --ref " +
                dir / "heldout.npz --train " + dir / "train.npz --device cpu");
    ASSERT_EQ(r.status, 0) << r.output;
    const auto at = r.output.find("for reference images; ");
    ASSERT_NE(at, std::string::npos) << r.output;
    double copies = -1;
    ASSERT_EQ(std::sscanf(r.output.c_str() + at, "for reference images; %lf%%", &copies), 1) << r.output;
    EXPECT_NEAR(copies, expect, 5.0) << samples;
  }
  r = run_rar("eval classify --classifier " + dir / "c.safetensors" + " --samples " + dir / "samples.npz --train " +
              dir / "train.npz --device cpu");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--train needs --ref"), std::string::npos) << r.output;
  // --bootstrap: the spread of the scores over the draw of the samples
  r = run_rar("eval classify --classifier " + dir / "c.safetensors" + " --samples " + dir / "fresh.npz --ref " +
              dir / "heldout.npz --bootstrap 20 --device cpu");
  ASSERT_EQ(r.status, 0) << r.output;
  double sd = -1, acc_sd = -1;
  ASSERT_EQ(std::sscanf(r.output.c_str() + r.output.find("spread:"),
                        "spread: feature-FID sd %lf (20 bootstrap resamples of the samples), accuracy sd %lf", &sd,
                        &acc_sd),
            2)
      << r.output;
  EXPECT_GT(sd, 0.0);
  EXPECT_GE(acc_sd, 0.0);
  r = run_rar("eval classify --classifier " + dir / "c.safetensors" + " --samples " + dir / "samples.npz --bootstrap 5");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--bootstrap needs --ref"), std::string::npos) << r.output;
  r = run_rar("eval classify --classifier " + dir / "train.npz" + " --samples " + dir / "samples.npz");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("rar: error:"), std::string::npos) << r.output;
}

// ---------------------------------------------------------------- ADM's evaluator

namespace {
std::map<std::string, torch::Tensor> npz_map(const std::string& path) {
  std::map<std::string, torch::Tensor> m;
  for (auto& [k, v] : io::read_npz(path)) m[k] = v;
  return m;
}
double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }
}  // namespace

// The evaluator's own outputs on synthetic activations (../shared/reference/adm_metrics.npz: made
// with guided-diffusion's FIDStatistics, compute_inception_score and ManifoldEstimator): FID,
// sFID and IS within 1e-6 relative, the radii as its fp16 distance block makes them, Precision and
// Recall within 0.001.
TEST(Adm, MatchesTheEvaluatorOnSyntheticActivations) {
  auto m = npz_map(shared_ref("adm_metrics.npz"));
  eval::FeatureStats ref, ref_s;
  ref.mu = m.at("mu"), ref.sigma = m.at("sigma");
  ref_s.mu = m.at("mu_s"), ref_s.sigma = m.at("sigma_s");
  const double fid = eval::frechet_distance(eval::feature_stats(m.at("sample_pool")), ref);
  const double sfid = eval::frechet_distance(eval::feature_stats(m.at("sample_spatial")), ref_s);
  EXPECT_LT(rel(fid, m.at("fid").item<double>()), 1e-6) << fid << " vs " << m.at("fid").item<double>();
  EXPECT_LT(rel(sfid, m.at("sfid").item<double>()), 1e-6) << sfid << " vs " << m.at("sfid").item<double>();
  // the reference's own statistics, computed here, are the file's mu and sigma
  const auto own = eval::feature_stats(m.at("ref_pool"));
  // (the evaluator's mu is numpy's float32 mean of float32 activations; ours is float64)
  EXPECT_TRUE(torch::allclose(own.mu, m.at("mu").to(torch::kFloat64), 0, 1e-5));
  EXPECT_TRUE(torch::allclose(own.sigma, m.at("sigma").to(torch::kFloat64), 1e-12, 1e-12));
  const double is_small = eval::adm_inception_score(m.at("sample_pool"), m.at("softmax_w"));
  EXPECT_LT(rel(is_small, m.at("inception_score_small").item<double>()), 1e-6) << is_small;
  const double is = eval::adm_inception_score(m.at("is_pool"), m.at("is_softmax_w"));  // splits 5000, 5000, 1000
  EXPECT_LT(rel(is, m.at("inception_score").item<double>()), 1e-6) << is << " vs " << m.at("inception_score").item<double>();
  // The radii: fp16 squared distances with fp32 accumulation, as the evaluator's block; which
  // fp16 value a sum rounds to depends on the accumulation order of the device that ran it, so
  // 74% are equal bit for bit and the rest one or two fp16 steps (2^-10 relative) away —
  // borderline cases that move Precision and Recall by less than 0.001 here.
  const auto radii = eval::manifold_radii(m.at("ref_pool"));
  const auto want = m.at("ref_radii").reshape({-1}).to(torch::kFloat32);
  const double same = radii.eq(want).to(torch::kFloat64).mean().item<double>();
  const auto ulp = torch::exp2(torch::floor(torch::log2(want.to(torch::kFloat64))) - 10);  // fp16 step at each radius
  const double worst = ((radii.to(torch::kFloat64) - want.to(torch::kFloat64)).abs() / ulp).max().item<double>();
  EXPECT_GT(same, 0.7) << "radii equal to the evaluator's: " << same;
  EXPECT_LE(worst, 4.0) << "a radius more than 4 fp16 steps from the evaluator's";
  const auto [precision, recall] = eval::adm_precision_recall(m.at("ref_pool"), m.at("sample_pool"));
  EXPECT_NEAR(precision, m.at("precision").item<double>(), 1e-3);
  EXPECT_NEAR(recall, m.at("recall").item<double>(), 1e-3);
}

// TensorFlow's legacy bilinear resize (the op inside the published Inception graph) against
// TensorFlow's own output for three input sizes (../shared/reference/adm_resize.npz).
TEST(Adm, TensorFlowResizeMatchesTensorFlow) {
  auto m = npz_map(shared_ref("adm_resize.npz"));
  for (const char* size : {"64", "256", "512"}) {
    const auto out = eval::tf_resize_bilinear(m.at(std::string("in_") + size).to(torch::kFloat32), 299);
    const auto want = m.at(std::string("out_") + size);
    ASSERT_EQ(out.sizes(), want.sizes()) << size;
    EXPECT_LT((out - want).abs().max().item<double>(), 1e-3) << size;
  }
}

// `rar eval adm` from activation files (the layout --cache writes): FID, sFID, Precision and Recall
// without any weights file, equal to the evaluator's; from ADM-layout image batches through a
// (random) Inception network: the five numbers, the reference's activations cached and reused
// to the same numbers, JSON written.
TEST(CliEval, AdmFromActivationsAndFromImageBatches) {
  TempDir dir;
  auto m = npz_map(shared_ref("adm_metrics.npz"));
  io::write_npz(dir / "ref.npz", {{"pool", m.at("ref_pool")}, {"spatial", m.at("ref_spatial")}, {"mu", m.at("mu")},
                                  {"sigma", m.at("sigma")}, {"mu_s", m.at("mu_s")}, {"sigma_s", m.at("sigma_s")}});
  io::write_npz(dir / "samples.npz", {{"pool", m.at("sample_pool")}, {"spatial", m.at("sample_spatial")}});
  auto r = run_rar("eval adm " + dir / "ref.npz" + " " + dir / "samples.npz" + " --json " + dir / "adm.json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("Inception Score: needs the Inception weights"), std::string::npos) << r.output;
  const auto j = nlohmann::json::parse(read_bytes(dir / "adm.json"));
  EXPECT_LT(rel(j["fid"].get<double>(), m.at("fid").item<double>()), 1e-6);
  EXPECT_LT(rel(j["sfid"].get<double>(), m.at("sfid").item<double>()), 1e-6);
  EXPECT_NEAR(j["precision"].get<double>(), m.at("precision").item<double>(), 1e-3);
  EXPECT_NEAR(j["recall"].get<double>(), m.at("recall").item<double>(), 1e-3);
  EXPECT_TRUE(j["inception_score"].is_null());

  // image batches (uint8 NHWC) and a random network
  torch::manual_seed(2);
  eval::FidInception net;
  io::write_safetensors(dir / "inception.safetensors", model::state_dict_of(*net));
  io::write_npz(dir / "ref_images.npz", {{"arr_0", torch::randint(0, 256, {12, 64, 64, 3}).to(torch::kUInt8)}});
  io::write_npz(dir / "sample_images.npz", {{"arr_0", torch::randint(0, 256, {9, 48, 48, 3}).to(torch::kUInt8)},
                                            {"arr_1", torch::zeros({9}, torch::kInt64)}});
  const std::string cmd = "eval adm " + dir / "ref_images.npz" + " " + dir / "sample_images.npz" + " --inception " +
                          dir / "inception.safetensors" + " --batch 5 --cache " + dir / "ref_acts.npz" + " --json ";
  auto first = run_rar(cmd + dir / "a.json");
  ASSERT_EQ(first.status, 0) << first.output;
  ASSERT_TRUE(path_exists(dir / "ref_acts.npz"));
  auto cached = npz_map(dir / "ref_acts.npz");
  EXPECT_EQ(cached.at("pool").sizes(), (std::vector<int64_t>{12, 2048}));
  EXPECT_EQ(cached.at("spatial").sizes(), (std::vector<int64_t>{12, 2023}));
  const auto a = nlohmann::json::parse(read_bytes(dir / "a.json"));
  for (const char* k : {"inception_score", "fid", "sfid", "precision", "recall"}) EXPECT_TRUE(std::isfinite(a[k].get<double>())) << k;
  EXPECT_EQ(a["sample_count"], 9);
  // the cached reference: the same numbers, without its images
  ASSERT_EQ(std::remove((dir / "ref_images.npz").c_str()), 0);
  io::write_npz(dir / "ref_images.npz", {{"arr_0", torch::zeros({1, 8, 8, 3}, torch::kUInt8)}});  // not read
  auto second = run_rar(cmd + dir / "b.json");
  ASSERT_EQ(second.status, 0) << second.output;
  const auto b = nlohmann::json::parse(read_bytes(dir / "b.json"));
  // the same activations, so the same numbers — FID and sFID up to the rounding of the matrix
  // square root (LAPACK's threaded sums: ~1e-20 apart at sFID ~1e-9 under load)
  for (const char* k : {"inception_score", "precision", "recall"}) EXPECT_EQ(a[k], b[k]) << k;
  for (const char* k : {"fid", "sfid"})
    EXPECT_LE(std::abs(a[k].get<double>() - b[k].get<double>()), 1e-9 * std::max(1.0, std::abs(a[k].get<double>()))) << k;
  EXPECT_TRUE(cached.at("pool").equal(npz_map(dir / "ref_acts.npz").at("pool")));  // the cache was read, not rewritten
  // a batch that is not images: one line
  io::write_npz(dir / "bad.npz", {{"arr_0", torch::zeros({4, 8}, torch::kFloat32)}});
  auto bad = run_rar("eval adm " + dir / "ref.npz" + " " + dir / "bad.npz" + " --inception " + dir / "inception.safetensors");
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("arr_0 must be uint8 images [N,H,W,3]"), std::string::npos) << bad.output;
}
