// `rar train`: the objective's draws (r = 0 is the scan order, r = 1 uniform permutations), the
// loss at r = 0 equal to the reference NLL, exact stop/resume, two gloo processes equal to one,
// learning on structured data, and the failure paths.
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <map>
#include <cstdlib>

#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include "data/token_file.h"
#include "helpers.h"
#include "small_step.h"
#include "io/event_file.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/generator.h"
#include "model/vqgan.h"
#include "training/rar_objective.h"
#include "training/rar_trainer.h"
#include "training/adamw.h"
#include "training/optim_config.h"
#include "training/train_step.h"
#include "sampling/orders.h"
#include "util/error.h"
#include "util/gpu.h"

using namespace rar;
using namespace rar::test;

namespace {

std::vector<nlohmann::json> metric_rows(const std::string& path, const char* key) {
  std::vector<nlohmann::json> rows;
  std::string all = read_bytes(path);
  size_t b = 0;
  for (size_t e; (e = all.find('\n', b)) != std::string::npos; b = e + 1) {
    auto row = nlohmann::json::parse(all.substr(b, e - b));
    if (row.contains(key)) rows.push_back(row);
  }
  return rows;
}

// 64 sequences of 16 tokens (4x4 grid, V=16, 3 classes): token i of class c is (5c + i) % 16 with a
// little noise, so there is something to learn.
std::string write_tiny_tokens(const TempDir& dir, const char* name = "train.rartok") {
  torch::manual_seed(11);
  auto labels = torch::randint(0, 3, {64}, torch::kInt64);
  auto pos = torch::arange(16, torch::kInt64).unsqueeze(0);
  auto tokens = (labels.unsqueeze(1) * 5 + pos).remainder(16);
  auto noise = torch::rand({64, 16}).lt(0.1);
  tokens = torch::where(noise, torch::randint(0, 16, {64, 16}, torch::kInt64), tokens);
  const std::string path = dir / name;
  data::write_token_file(path, tokens, labels, 16, 3);
  return path;
}

std::string tiny_model_args() {
  return " model.vq_model.codebook_size=16 model.generator.hidden_size=32 model.generator.num_hidden_layers=2"
         " model.generator.num_attention_heads=2 model.generator.intermediate_size=64"
         " model.generator.image_seq_len=16 model.generator.condition_num_classes=3"
         " training.mixed_precision=no experiment.log_every=1";
}

}  // namespace

TEST(RarObjective, OrdersAreTheScanAtR0AndUniformPermutationsAtR1) {
  std::vector<int64_t> scan(16);
  for (int64_t i = 0; i < 16; ++i) scan[i] = 15 - i;
  auto d0 = training::draw_objective(32, 0, 32, scan, 0.0, 0.0, 1, 0);
  EXPECT_TRUE(d0.orders.equal(torch::tensor(scan).unsqueeze(0).expand({32, 16})));
  EXPECT_FALSE(d0.permuted.any().item<bool>());
  EXPECT_FALSE(d0.drop.any().item<bool>());

  // r = 1: every row a permutation; where token 0 lands is uniform over the 16 positions.
  const int64_t N = 4000;
  auto d1 = training::draw_objective(N, 0, N, scan, 1.0, 0.1, 2, 5);
  EXPECT_TRUE(d1.permuted.all().item<bool>());
  EXPECT_TRUE(std::get<0>(d1.orders.sort(1)).equal(torch::arange(16).unsqueeze(0).expand({N, 16})));
  auto where0 = d1.orders.eq(0).to(torch::kInt64).argmax(1);
  auto counts = torch::bincount(where0, {}, 16).to(torch::kFloat64);
  const double expected = N / 16.0;
  const double chi2 = ((counts - expected).pow(2) / expected).sum().item<double>();
  EXPECT_LT(chi2, 37.7);  // 15 degrees of freedom, p = 0.001
  const double drop_rate = d1.drop.to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(drop_rate, 0.1, 0.02);

  // r = 0.5: about half permuted; a rank's slice equals those rows of the whole global batch.
  auto all = training::draw_objective(64, 0, 64, scan, 0.5, 0.1, 3, 7);
  auto part = training::draw_objective(64, 16, 16, scan, 0.5, 0.1, 3, 7);
  EXPECT_TRUE(part.orders.equal(all.orders.narrow(0, 16, 16)));
  EXPECT_TRUE(part.drop.equal(all.drop.narrow(0, 16, 16)));
  const double frac = all.permuted.to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(frac, 0.25);
  EXPECT_LT(frac, 0.75);
  // Another step draws differently.
  auto other = training::draw_objective(64, 0, 64, scan, 0.5, 0.1, 3, 8);
  EXPECT_FALSE(other.orders.equal(all.orders));

  // The draws are those of the plain per-row tensor code (the fast path writes through pointers):
  // one generator per (seed, step, row), u = rand(2), then randperm when u0 < r.
  for (double r : {0.0, 0.3, 1.0}) {
    auto fast = training::draw_objective(64, 8, 40, scan, r, 0.2, 11, 123);
    for (int64_t i = 0; i < 40; ++i) {
      const uint64_t row = static_cast<uint64_t>(8 + i);
      const uint64_t key = 11 * 0x9E3779B97F4A7C15ULL ^ (uint64_t(123) * 0xBF58476D1CE4E5B9ULL) ^ ((row + 1) * 0x94D049BB133111EBULL);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(key);
      auto u = torch::rand({2}, gen);
      const bool permuted = u[0].item<float>() < r;
      EXPECT_EQ(fast.permuted[i].item<bool>(), permuted) << "r " << r << " row " << i;
      EXPECT_EQ(fast.drop[i].item<bool>(), u[1].item<float>() < 0.2) << "r " << r << " row " << i;
      auto order = permuted ? torch::randperm(16, gen, torch::kInt64) : torch::tensor(scan);
      EXPECT_TRUE(fast.orders[i].equal(order)) << "r " << r << " row " << i;
    }
  }
}

TEST(TrainRar, LossAtR0EqualsTheReferenceNll) {
  TempDir dir;
  auto tokens = io::read_npy(shared_ref("ref_tokens.npy"));
  auto classes = io::read_npy(shared_ref("ref_classes.npy"));
  auto nll = io::read_npy(shared_ref("ref_nll.npy"));
  data::write_token_file(dir / "ref.rartok", tokens, classes, 1024, 10);
  auto r = run_rar("train --data " + dir / "ref.rartok" + " --out " + dir / "run" +
                   " --device cpu --steps 1 training.init_from=" + shared_ref("tiny_rar.bin") +
                   " model.generator.hidden_size=64 model.generator.num_hidden_layers=2"
                   " model.generator.num_attention_heads=4 model.generator.intermediate_size=256"
                   " model.generator.condition_num_classes=10 model.generator.dropout=0 model.generator.attn_drop=0"
                   " model.generator.class_label_dropout=0 model.generator.randomness_anneal_start=0"
                   " model.generator.randomness_anneal_end=0 training.per_gpu_batch_size=4"
                   " optimizer.params.learning_rate=0 lr_scheduler.params.end_lr=0 training.mixed_precision=no"
                   " training.enable_tf32=false experiment.log_every=1");
  ASSERT_EQ(r.status, 0) << r.output;
  auto rows = metric_rows(dir / "run/metrics.jsonl", "loss");
  ASSERT_EQ(rows.size(), 1u);
  const double expected = nll[0].mean().item<double>();
  EXPECT_NEAR(rows[0]["loss"].get<double>(), expected, 1e-5 * expected);
  EXPECT_EQ(rows[0]["randomness"].get<double>(), 0.0);
  EXPECT_TRUE(path_exists(dir / "run/generator.safetensors"));
}

// A run's folder belongs to that run: --resume with settings that change the computation is
// refused (naming what differs), settings that only steer the run may change, and a fresh run
// without --resume does not write over another run's checkpoints.
TEST(TrainRar, ResumeChecksTheConfigAndFreshRunsKeepOutOfUsedFolders) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  const std::string args = " --device cpu --steps 4" + tiny_model_args() + " training.per_gpu_batch_size=4 experiment.save_every=2";
  auto first = run_rar("train --data " + data + " --out " + dir / "run" + args + " --stop-after 2");
  ASSERT_EQ(first.status, 0) << first.output;
  auto other_lr = run_rar("train --data " + data + " --out " + dir / "run" + args + " --resume optimizer.params.learning_rate=1e-2");
  EXPECT_EQ(other_lr.status, 1) << other_lr.output;
  EXPECT_NE(other_lr.output.find("optimizer.params.learning_rate: 0.0004 -> 0.01"), std::string::npos) << other_lr.output;
  // the global batch must stay (per-process batch x processes x accumulation; the parts may change)
  auto other_batch = run_rar("train --data " + data + " --out " + dir / "run" + args + " --resume training.per_gpu_batch_size=2");
  EXPECT_EQ(other_batch.status, 1) << other_batch.output;
  EXPECT_NE(other_batch.output.find("written with a global batch of 4 sequences, this run's is 2 (2 per process x 1 "
                                    "processes x 1 accumulation steps)"),
            std::string::npos)
      << other_batch.output;
  auto fresh = run_rar("train --data " + data + " --out " + dir / "run" + args);
  EXPECT_EQ(fresh.status, 1) << fresh.output;
  EXPECT_NE(fresh.output.find("add --resume to continue it"), std::string::npos) << fresh.output;
  // logging and saving intervals, the time budget and the device may change
  auto steer = run_rar("train --data " + data + " --out " + dir / "run" + args +
                       " --resume experiment.log_every=2 experiment.save_every=1 --minutes 30");
  ASSERT_EQ(steer.status, 0) << steer.output;
  EXPECT_NE(steer.output.find("resumed from"), std::string::npos) << steer.output;
  // rows after the checkpoint are written once: steps 1..4, no repeats
  std::vector<int64_t> steps;
  for (const auto& row : metric_rows(dir / "run/metrics.jsonl", "loss")) steps.push_back(row["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 4}));  // log_every 1 before the stop, 2 after it
}

// Resume hazards: another dataset (a file of other content, whatever its path) is refused naming
// both; the same data at another path continues; a deleted metrics.jsonl and a damaged
// config.yaml in the checkpoint are named as such, not as "a config that differs".
TEST(TrainRar, ResumeRefusesOtherDataALostLogAndADamagedConfig) {
  TempDir dir;
  const std::string a = write_tiny_tokens(dir, "a.rartok");
  torch::manual_seed(12);
  data::write_token_file(dir / "b.rartok", torch::randint(0, 16, {64, 16}, torch::kInt64),
                         torch::randint(0, 3, {64}, torch::kInt64), 16, 3);
  const std::string args = " --device cpu --steps 6" + tiny_model_args() + " training.per_gpu_batch_size=4 experiment.save_every=2";
  auto first = run_rar("train --data " + a + " --out " + dir / "run" + args + " --stop-after 2");
  ASSERT_EQ(first.status, 0) << first.output;
  auto other = run_rar("train --data " + dir / "b.rartok" + " --out " + dir / "run" + args + " --resume");
  EXPECT_EQ(other.status, 1) << other.output;
  EXPECT_NE(other.output.find("the run was trained on " + a + " (64 sequences"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find(dir / "b.rartok" + " is another dataset (64 sequences"), std::string::npos) << other.output;
  // the log deleted
  const std::string log = read_bytes(dir / "run/metrics.jsonl");
  ASSERT_EQ(std::remove((dir / "run/metrics.jsonl").c_str()), 0);
  auto lost = run_rar("train --data " + a + " --out " + dir / "run" + args + " --resume");
  EXPECT_EQ(lost.status, 1) << lost.output;
  EXPECT_NE(lost.output.find("metrics.jsonl: missing, but the run resumes from"), std::string::npos) << lost.output;
  write_bytes(dir / "run/metrics.jsonl", log);
  // the checkpoint's config.yaml cut short
  const std::string cfg = dir / "run/checkpoints/step-00000002/config.yaml";
  const std::string text = read_bytes(cfg);
  write_bytes(cfg, text.substr(0, text.size() / 2));
  auto cut = run_rar("train --data " + a + " --out " + dir / "run" + args + " --resume");
  EXPECT_EQ(cut.status, 1) << cut.output;
  EXPECT_NE(cut.output.find("config.yaml: damaged"), std::string::npos) << cut.output;
  write_bytes(cfg, text);
  // the same data under another name continues
  ASSERT_EQ(std::system(("cp " + a + " " + dir / "moved.rartok").c_str()), 0);
  auto moved = run_rar("train --data " + dir / "moved.rartok" + " --out " + dir / "run" + args + " --resume");
  EXPECT_EQ(moved.status, 0) << moved.output;
}

// What the command alone proves (the skeleton's decisions: RunTraining.* with a fake job): the RAR
// trainer's own state — dropout RNG, EMA, accumulation, annealed randomness — survives a resume bit
// for bit.
TEST(TrainRar, StopAndResumeEndWithTheSameWeights) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  // Dropout on (its RNG must be restored), randomness annealed across the run, accumulation 2.
  const std::string args = " --device cpu --steps 8" + tiny_model_args() +
                           " training.per_gpu_batch_size=4 training.gradient_accumulation_steps=2"
                           " model.generator.randomness_anneal_start=2 model.generator.randomness_anneal_end=6"
                           " lr_scheduler.params.warmup_steps=2 optimizer.params.learning_rate=3e-3"
                           " experiment.save_every=2 training.use_ema=true training.ema_decay=0.9";
  auto full = run_rar("train --data " + data + " --out " + dir / "full" + args);
  ASSERT_EQ(full.status, 0) << full.output;
  auto r1 = run_rar("train --data " + data + " --out " + dir / "split" + args + " --stop-after 3");
  ASSERT_EQ(r1.status, 0) << r1.output;
  EXPECT_NE(r1.output.find("stopped at step 3"), std::string::npos) << r1.output;
  auto r2 = run_rar("train --data " + data + " --out " + dir / "split" + args + " --resume --stop-after 2");
  ASSERT_EQ(r2.status, 0) << r2.output;
  EXPECT_NE(r2.output.find("resumed from"), std::string::npos) << r2.output;
  auto r3 = run_rar("train --data " + data + " --out " + dir / "split" + args + " --resume");
  ASSERT_EQ(r3.status, 0) << r3.output;
  for (const char* f : {"generator.safetensors", "generator_ema.safetensors"}) {
    auto a = io::read_safetensors(join_path(dir / "full", f));
    auto b = io::read_safetensors(join_path(dir / "split", f));
    ASSERT_EQ(a.names(), b.names());
    for (const auto& n : a.names()) EXPECT_TRUE(a.at(n).equal(b.at(n))) << f << " " << n;
  }
  EXPECT_EQ(metric_rows(dir / "split/metrics.jsonl", "loss").size(), 8u);
}

// training.fp8 from the command line: it reaches the model (other weights than without it), a run
// stopped and resumed ends with the uninterrupted run's weights (current scaling carries no state
// between steps; delayed scaling, the default, keeps its history in the checkpoint), and a resume
// that switches it or its scaling is refused naming the key; without fp8 the scaling keys compute
// nothing, so a run resumes with another value of them.
TEST(TrainRar, Fp8RunResumesToTheSameWeightsAndKeepsItsSetting) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  const std::string args = " --device cpu --steps 6" + tiny_model_args() +
                           " training.per_gpu_batch_size=4 lr_scheduler.params.warmup_steps=2"
                           " optimizer.params.learning_rate=3e-3 experiment.save_every=2";
  const std::string current = " training.fp8=true training.fp8_scaling=current";
  auto full = run_rar("train --data " + data + " --out " + dir / "full" + args + current);
  ASSERT_EQ(full.status, 0) << full.output;
  EXPECT_NE(full.output.find("cpu fp32, fp8 products (current scaling), data parallel"), std::string::npos)
      << full.output;
  auto plain = run_rar("train --data " + data + " --out " + dir / "plain" + args);
  ASSERT_EQ(plain.status, 0) << plain.output;
  auto r1 = run_rar("train --data " + data + " --out " + dir / "split" + args + current + " --stop-after 3");
  ASSERT_EQ(r1.status, 0) << r1.output;
  auto other = run_rar("train --data " + data + " --out " + dir / "split" + args + " --resume");
  EXPECT_NE(other.status, 0);
  EXPECT_NE(other.output.find("training.fp8: true -> false"), std::string::npos) << other.output;
  auto rescaled = run_rar("train --data " + data + " --out " + dir / "split" + args + " training.fp8=true --resume");
  EXPECT_NE(rescaled.status, 0);
  EXPECT_NE(rescaled.output.find("training.fp8_scaling: \"current\" -> \"delayed\""), std::string::npos)
      << rescaled.output;
  auto r2 = run_rar("train --data " + data + " --out " + dir / "split" + args + current + " --resume");
  ASSERT_EQ(r2.status, 0) << r2.output;
  auto a = io::read_safetensors(dir / "full/generator.safetensors");
  auto b = io::read_safetensors(dir / "split/generator.safetensors");
  auto c = io::read_safetensors(dir / "plain/generator.safetensors");
  ASSERT_EQ(a.names(), b.names());
  for (const auto& n : a.names()) EXPECT_TRUE(a.at(n).equal(b.at(n))) << n;
  EXPECT_FALSE(a.at("blocks.0.mlp.fc1.weight").equal(c.at("blocks.0.mlp.fc1.weight")));
  // delayed scaling (training.fp8's default scaling): other weights than current scaling (the
  // history scales from the second step on), and the same after a stop and resume (the checkpoint
  // keeps the history)
  const std::string delayed = " training.fp8=true training.fp8_amax_history=2";
  auto dfull = run_rar("train --data " + data + " --out " + dir / "dfull" + args + delayed);
  ASSERT_EQ(dfull.status, 0) << dfull.output;
  EXPECT_NE(dfull.output.find("fp8 products (delayed scaling, 2 steps of history)"), std::string::npos)
      << dfull.output;
  auto d1 = run_rar("train --data " + data + " --out " + dir / "dsplit" + args + delayed + " --stop-after 3");
  ASSERT_EQ(d1.status, 0) << d1.output;
  auto d2 = run_rar("train --data " + data + " --out " + dir / "dsplit" + args + delayed + " --resume");
  ASSERT_EQ(d2.status, 0) << d2.output;
  EXPECT_EQ(d2.output.find("no fp8 amax history"), std::string::npos) << d2.output;
  auto da = io::read_safetensors(dir / "dfull/generator.safetensors");
  auto db = io::read_safetensors(dir / "dsplit/generator.safetensors");
  for (const auto& n : da.names()) EXPECT_TRUE(da.at(n).equal(db.at(n))) << "delayed " << n;
  EXPECT_FALSE(da.at("blocks.0.mlp.fc1.weight").equal(a.at("blocks.0.mlp.fc1.weight")));
  auto bad = run_rar("train --data " + data + " --out " + dir / "dbad" + args +
                     " training.fp8=true training.fp8_scaling=late");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("training.fp8_scaling: expected current or delayed, got 'late'"), std::string::npos)
      << bad.output;
  // without fp8: a run saved with other scaling keys resumes to the plain run's weights
  auto p1 = run_rar("train --data " + data + " --out " + dir / "psplit" + args +
                    " training.fp8_scaling=current training.fp8_amax_history=3 --stop-after 3");
  ASSERT_EQ(p1.status, 0) << p1.output;
  auto p2 = run_rar("train --data " + data + " --out " + dir / "psplit" + args + " --resume");
  ASSERT_EQ(p2.status, 0) << p2.output;
  auto pb = io::read_safetensors(dir / "psplit/generator.safetensors");
  for (const auto& n : c.names()) EXPECT_TRUE(c.at(n).equal(pb.at(n))) << "plain " << n;
}

// What the command alone proves: data parallel over two real processes (gloo) trains what one
// process trains with the same global batch, for every bucketing and gradient dtype.
TEST(TrainRar, TwoGlooProcessesMatchOneProcessWithTheSameGlobalBatch) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  // accum 1: one bucket for the whole model; accum 2 (only the last micro-step's backward
  // communicates): ~20 KB buckets, several in flight; bf16: gradients travel as bf16.
  // split: one process accumulating two micro-batches of 4 vs two processes of 4 (the same rows and
  // draws, the same reductions: bit-identical); fp8split: the same with training.fp8, current scaling (each
  // micro-batch's casts take their scales from that micro-batch alone, on either side); fp8delayed:
  // with delayed scaling (the history advances with the max over the step's micro-batches on one
  // side, over the ranks' records on the other: the same scales).
  for (std::string tag : {"acc1", "acc2", "bf16", "split", "fp8split", "fp8delayed"}) {
    const int accum = tag == "acc2" ? 2 : 1;
    const bool bf16 = tag == "bf16", split = tag == "split" || tag == "fp8split" || tag == "fp8delayed";
    const std::string args = " --data " + data + " --device cpu --steps 5" + tiny_model_args() +
                             " model.generator.dropout=0 model.generator.attn_drop=0 lr_scheduler.params.warmup_steps=1"
                             " model.generator.randomness_anneal_start=0 model.generator.randomness_anneal_end=10"
                             " optimizer.params.learning_rate=3e-3 experiment.log_every=1 training.gradient_accumulation_steps=" +
                             std::to_string(accum) + (accum == 2 ? " training.ddp_bucket_mb=0.02" : "") +
                             (tag == "fp8split" ? " training.fp8=true training.fp8_scaling=current" : "") +
                             (tag == "fp8delayed" ? " training.fp8=true training.fp8_scaling=delayed" : "");
    auto one = run_rar("train --out " + dir / (tag + "one") + args +
                       (split ? " training.per_gpu_batch_size=4 training.gradient_accumulation_steps=2"
                              : " training.per_gpu_batch_size=8"));
    ASSERT_EQ(one.status, 0) << one.output;
    const int port = 20000 + static_cast<int>((::getpid() * 5 + accum + (bf16 ? 7 : 0) + (split ? 13 : 0) +
                                               (tag == "fp8split" ? 17 : 0) + (tag == "fp8delayed" ? 29 : 0)) %
                                              20000);
    const std::string log0 = dir / (tag + ".rank0.log");
    auto two = run_rar_two_ranks("train --out " + dir / (tag + "two") + args + " training.per_gpu_batch_size=4" +
                                     (bf16 ? " training.ddp_grad_dtype=bf16" : ""),
                                 port, dir / tag);
    ASSERT_EQ(two.status, 0) << two.output;
    EXPECT_NE(read_bytes(log0).find("data parallel: gloo"), std::string::npos) << read_bytes(log0);
    // Buckets are launched from the gradient hooks, inside backward.
    const std::string l0 = read_bytes(log0);
    const auto at = l0.find("gradient buckets: ");
    ASSERT_NE(at, std::string::npos) << l0;
    long long nb = 0, early = 0;
    ASSERT_EQ(std::sscanf(l0.c_str() + at, "gradient buckets: %lld, %lld all-reduced", &nb, &early), 2);
    EXPECT_EQ(early, nb) << l0;
    if (accum == 1) EXPECT_EQ(nb, 1);
    else EXPECT_GT(nb, 3);
    auto a = io::read_safetensors(dir / (tag + "one/generator.safetensors"));
    auto b = io::read_safetensors(dir / (tag + "two/generator.safetensors"));
    ASSERT_EQ(a.names(), b.names());
    // bf16 gradients: the average is rounded to 8 bits of mantissa; Adam's steps are ~lr
    const double rtol = bf16 ? 0 : 1e-4, atol = bf16 ? 3e-3 * 5 : 1e-5;
    for (const auto& n : a.names()) {
      if (split) EXPECT_TRUE(torch::equal(a.at(n), b.at(n))) << tag << " " << n;
      else EXPECT_TRUE(torch::allclose(a.at(n), b.at(n), rtol, atol)) << tag << " " << n;
    }
    auto la = metric_rows(dir / (tag + "one/metrics.jsonl"), "loss");
    auto lb = metric_rows(dir / (tag + "two/metrics.jsonl"), "loss");
    ASSERT_EQ(la.size(), 5u);
    ASSERT_EQ(la.size(), lb.size());
    for (size_t i = 0; i < la.size(); ++i) {
      EXPECT_NEAR(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>(), bf16 ? 1e-3 : 1e-4) << tag << " " << i;
      // the averaged gradient's norm (a sum instead of an average would double it)
      const double ga = la[i]["grad_norm"].get<double>(), gb = lb[i]["grad_norm"].get<double>();
      EXPECT_NEAR(gb / ga, 1.0, bf16 ? 1e-2 : 1e-5) << tag << " " << i;
    }
  }
}

// Two "nodes" of two gloo processes each, with the variables torchrun sets on each node, and a
// folder per node that the other node cannot see (rank 0's is the run's): they train bit-identically
// to one process accumulating the same global batch of 8 (the ranks' gradients are summed in rank
// order, the order of the accumulation); a checkpoint needs no shared folder (every rank's random
// streams travel through the process group, the other node's folder stays empty) and resuming
// reads it on rank 0 only; resuming with one process (the same global batch, dropout off)
// continues exactly; with dropout on another number of processes is refused, naming both.
TEST(TrainRar, TwoNodesOfTwoProcessesMatchOneProcessAndResumeWithoutASharedFolder) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  const std::string args = " --data " + data + " --device cpu --steps 6" + tiny_model_args() +
                           " model.generator.dropout=0 model.generator.attn_drop=0 lr_scheduler.params.warmup_steps=1"
                           " model.generator.randomness_anneal_start=0 model.generator.randomness_anneal_end=10"
                           " optimizer.params.learning_rate=3e-3 experiment.save_every=0";
  auto one = run_rar("train --out " + dir / "one" + args + " training.per_gpu_batch_size=2 training.gradient_accumulation_steps=4");
  ASSERT_EQ(one.status, 0) << one.output;
  const int port = 20000 + static_cast<int>((::getpid() * 7 + 3) % 20000);
  auto four = [&](const std::string& extra, int p) {
    std::vector<std::pair<std::string, std::string>> procs;
    for (int r = 0; r < 4; ++r) {
      const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(p) + " WORLD_SIZE=4 RANK=" +
                              std::to_string(r) + " LOCAL_RANK=" + std::to_string(r % 2) +
                              " LOCAL_WORLD_SIZE=2 GROUP_RANK=" + std::to_string(r / 2);
      procs.emplace_back(env, "train --out " + dir / ("node" + std::to_string(r / 2)) + args +
                                  " training.per_gpu_batch_size=2" + extra);
    }
    return run_rar_processes(procs, dir / "four");
  };
  auto cut = four(" --stop-after 3", port);
  ASSERT_EQ(cut.status, 0) << cut.output;
  ASSERT_TRUE(is_directory(dir / "node0/checkpoints/step-00000003")) << cut.output;
  EXPECT_FALSE(is_directory(dir / "node1/checkpoints/step-00000003")) << "the other node's folder holds a checkpoint";
  // a copy of the cut run for the one-process resume
  ASSERT_EQ(std::system(("cp -r " + dir / "node0" + " " + dir / "single").c_str()), 0);
  auto resumed = four(" --resume", port + 1);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  auto single = run_rar("train --out " + dir / "single" + args +
                        " training.per_gpu_batch_size=2 training.gradient_accumulation_steps=4 --resume");
  ASSERT_EQ(single.status, 0) << single.output;
  EXPECT_NE(single.output.find("resumed with 1 processes (checkpoint: 4)"), std::string::npos) << single.output;
  auto a = io::read_safetensors(dir / "one/generator.safetensors");
  for (const char* run : {"node0", "single"}) {
    auto b = io::read_safetensors(dir / (std::string(run) + "/generator.safetensors"));
    ASSERT_EQ(a.names(), b.names());
    for (const auto& n : a.names()) EXPECT_TRUE(torch::equal(a.at(n), b.at(n))) << run << " " << n;
  }
  // dropout on: two processes, then one — refused
  const std::string drop = " --data " + data + " --device cpu --steps 4" + tiny_model_args() + " experiment.save_every=0";
  auto two = run_rar_two_ranks("train --out " + dir / "drop" + drop + " training.per_gpu_batch_size=2 --stop-after 1",
                               port + 2, dir / "drop");
  ASSERT_EQ(two.status, 0) << two.output;
  auto refused = run_rar("train --out " + dir / "drop" + drop +
                         " training.per_gpu_batch_size=2 training.gradient_accumulation_steps=2 --resume");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("written by 2 processes, resumed with 1: the dropout masks come from each process's own "
                                "random stream"),
            std::string::npos)
      << refused.output;
}

// What the command alone proves: a whole run learns (its loss halves on learnable tokens, r anneals 1 -> 0),
// validates and draws its sample grids on schedule.
TEST(TrainRar, LearnsStructuredTokensValidatesAndDrawsSampleGrids) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  // A (random) tokenizer with 16 codes and 4x4 tokens for the sample grids.
  model::VQModel vq(test_support::tiny_vq_config());
  model::save_vq(dir / "vq.safetensors", vq);
  const std::string device = std::getenv("RAR_TEST_DEVICE") ? std::getenv("RAR_TEST_DEVICE") : "cpu";
  auto r = run_rar("train --data " + data + " --val " + data + " --out " + dir / "run" + " --tokenizer " +
                   dir / "vq.safetensors" + " --device " + device + " --steps 60 experiment.generate_every=30" +
                   tiny_model_args() +
                   " training.per_gpu_batch_size=16 optimizer.params.learning_rate=3e-3 lr_scheduler.params.warmup_steps=5"
                   " model.generator.randomness_anneal_start=20 model.generator.randomness_anneal_end=40"
                   " experiment.eval_every=30");
  ASSERT_EQ(r.status, 0) << r.output;
  auto rows = metric_rows(dir / "run/metrics.jsonl", "loss");
  ASSERT_EQ(rows.size(), 60u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += rows[i]["loss"].get<double>() / 5, last += rows[55 + i]["loss"].get<double>() / 5;
  EXPECT_LT(last, 0.5 * first) << "first " << first << " last " << last;
  EXPECT_EQ(rows[0]["randomness"].get<double>(), 1.0);
  EXPECT_EQ(rows[59]["randomness"].get<double>(), 0.0);
  auto val = metric_rows(dir / "run/metrics.jsonl", "val/nll");
  ASSERT_EQ(val.size(), 2u);
  EXPECT_LT(val[1]["val/nll"].get<double>(), 1.5);
  EXPECT_NE(r.output.find("validation step 60"), std::string::npos);
  EXPECT_TRUE(path_exists(dir / "run/samples-00000030.png"));
  EXPECT_TRUE(path_exists(dir / "run/samples-00000060.png"));
}

TEST(TrainRar, FailuresAreOneLineAndKeepTheLastCheckpoint) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  auto r = run_rar("train --data " + data + " --out " + dir / "x --device cpu --steps 2");  // default V=1024
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("train.rartok"), std::string::npos) << r.output;
  r = run_rar("train --out " + dir / "x --device cpu --steps 2");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("dataset.train_tokens is not set"), std::string::npos) << r.output;
  r = run_rar("train --data " + data + " --out " + dir / "nan --device cpu --steps 6" + tiny_model_args() +
              " optimizer.params.learning_rate=1e30 lr_scheduler.params.warmup_steps=0 training.max_grad_norm=0"
              " experiment.save_every=1 model.generator.dropout=0 model.generator.attn_drop=0");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("rar: error: step "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Last good checkpoint"), std::string::npos) << r.output;
  // weights that overflow in the very last update: caught before anything is saved
  r = run_rar("train --data " + data + " --out " + dir / "inf --device cpu --steps 1" + tiny_model_args() +
              " optimizer.params.learning_rate=1e300 lr_scheduler.params.warmup_steps=0 training.max_grad_norm=0");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("is not finite (NaN or inf)"), std::string::npos) << r.output;
  EXPECT_FALSE(path_exists(dir / "inf/generator.safetensors"));
}

TEST(RecomputedBlocks, GradientsEqualThePlainPathWithDropout) {
  model::GeneratorConfig c;
  c.hidden = 32;
  c.layers = 3;
  c.heads = 2;
  c.mlp = 64;
  c.codebook = 16;
  c.classes = 3;
  c.seq_len = 16;
  c.dropout = 0.2;
  c.attn_dropout = 0.2;
  torch::manual_seed(4);
  model::Generator g(c);
  {  // non-zero adaLN so every path carries gradient
    torch::NoGradGuard ng;
    for (auto& p : g->parameters()) p.add_(0.05 * torch::randn_like(p));
  }
  g->train();
  auto tokens = torch::randint(0, 16, {4, 16}, torch::kInt64);
  auto cond = g->condition_tokens(torch::tensor({0, 1, 2, 1}, torch::kInt64));
  auto orders = torch::stack({torch::randperm(16), torch::arange(16), torch::randperm(16), torch::arange(16)});
  auto run = [&](int64_t ckpt_layers, bool mlp = false) {
    g->recompute_layers = ckpt_layers;
    g->set_recompute_mlp(mlp);
    for (auto& p : g->parameters()) p.mutable_grad() = torch::Tensor();
    torch::manual_seed(99);
    auto la = training::next_token_loss(g->forward(tokens, cond, orders), tokens, orders);
    la.loss.backward();
    std::vector<torch::Tensor> grads;
    for (auto& p : g->parameters()) grads.push_back(p.grad().clone());
    // the next draws of the RNG stream after the step (forward, recomputation and backward)
    auto next = torch::rand({16});
    return std::make_tuple(la.loss.item<double>(), grads, next);
  };
  auto [l0, g0, next0] = run(0);
  for (int64_t n : {int64_t(1), c.layers}) {  // some blocks recomputed, then all
    auto [l1, g1, next1] = run(n);
    EXPECT_EQ(l0, l1) << n;
    ASSERT_EQ(g0.size(), g1.size());
    for (size_t i = 0; i < g0.size(); ++i) EXPECT_TRUE(torch::allclose(g0[i], g1[i], 1e-5, 1e-7)) << n << " " << i;
    // The RNG stream after a step with recomputed blocks is where the plain step leaves it (the
    // recomputation replays the dropout masks from saved states, it does not draw new ones), so
    // the following steps of a run see the same random numbers either way.
    EXPECT_TRUE(next0.equal(next1)) << n;
  }
  // Every block's MLP recomputing fc1's output (alone, and inside recomputed blocks): the same
  // loss, gradients and RNG stream.
  for (int64_t n : {int64_t(0), int64_t(1)}) {
    auto [l1, g1, next1] = run(n, true);
    EXPECT_EQ(l0, l1) << "recompute_mlp, " << n;
    ASSERT_EQ(g0.size(), g1.size());
    for (size_t i = 0; i < g0.size(); ++i)
      EXPECT_TRUE(torch::allclose(g0[i], g1[i], 1e-5, 1e-7)) << "recompute_mlp, " << n << " " << i;
    EXPECT_TRUE(next0.equal(next1)) << "recompute_mlp, " << n;
  }
  g->recompute_layers = 0;
  g->set_recompute_mlp(false);
}

// CUDA only: a bf16-autocast training step tracks the float32 one (loss and gradient direction),
// and activation checkpointing under autocast replays the same step.
TEST(TrainRarCuda, Bf16AutocastStepTracksFp32AndCheckpointingReplaysIt) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto s = test_support::small_cuda_step(128, 4);
  auto run = [&](bool autocast, bool ckpt) {
    s.g->recompute_layers = ckpt ? s.cfg.layers : 0;
    return s.step(autocast);
  };
  auto [l32, g32] = run(false, false);
  auto [l16, g16] = run(true, false);
  auto [l16b, g16b] = run(true, false);
  auto [l16c, g16c] = run(true, true);
  s.g->recompute_layers = 0;
  s.g->set_recompute_mlp(true);  // fc1's output recomputed: the very same products and kernels
  auto [l16m, g16m] = run(true, false);
  s.g->set_recompute_mlp(false);
  EXPECT_NEAR(l16m, l16, 1e-6 * l16);
  EXPECT_NEAR(l16, l32, 2e-2 * l32);
  const double cos = (g16 * g32).sum().item<double>() / (g16.norm() * g32.norm()).item<double>();
  EXPECT_GT(cos, 0.99);
  EXPECT_NEAR(l16c, l16, 1e-6 * l16);
  // Where the two differ, name the parameter (the gradients are concatenated in parameters() order).
  auto worst = [&](const torch::Tensor& a, const torch::Tensor& b) {
    std::string out;
    int64_t off = 0;
    for (const auto& kv : s.g->named_parameters()) {
      const int64_t n = kv.value().numel();
      auto d = (a.narrow(0, off, n) - b.narrow(0, off, n)).abs().max().item<double>();
      auto m = b.narrow(0, off, n).abs().max().item<double>();
      if (d > 1e-3 * m + 1e-5) out += " " + kv.key() + " (max diff " + std::to_string(d) + " of " + std::to_string(m) + ")";
      off += n;
    }
    return out;
  };
  EXPECT_TRUE(torch::allclose(g16b, g16, 1e-3, 1e-5)) << "the bf16 step is not repeatable:" << worst(g16b, g16);
  EXPECT_TRUE(torch::allclose(g16c, g16, 1e-3, 1e-5)) << "step with recomputed blocks differs:" << worst(g16c, g16);
  EXPECT_TRUE(torch::allclose(g16m, g16, 1e-3, 1e-5)) << "step recomputing fc1's output differs:" << worst(g16m, g16);
}

// The captured training step (training/train_step.h) against the eager one: the same generator,
// batch and generator state, three steps with AdamW in between, dropout everywhere (attention,
// both branches, the MLP's hidden units) under bf16 autocast. The graph draws its dropout masks
// from the Philox offsets the eager step would use, so the losses, gradient norms and final
// weights are equal bit for bit; a replay that reused its capture's masks would differ at step 2.
// With training.fp8 too (the casts' scales live on the device: a replay computes them anew), and
// with delayed scaling (the first step eager while the history is empty, the history advanced
// after each step outside the graph, whose casts read it in place).
TEST(TrainRarCuda, CapturedStepEqualsTheEagerStep) {
  if (!torch::cuda::is_available() || !gpu::built()) GTEST_SKIP() << "no CUDA device";
  enum { kNoFp8, kCurrent, kDelayed };
  auto run = [](bool graph, int fp8) {
    auto s = test_support::small_cuda_step(160, 5);  // its batch, and its config with dropout
    model::GeneratorConfig cfg = s.cfg;
    cfg.dropout = cfg.attn_dropout = 0.1;
    torch::manual_seed(8);
    model::Generator g(cfg);
    {
      torch::NoGradGuard ng;
      for (auto& p : g->parameters()) p.add_(0.05 * torch::randn_like(p));  // off the zero-adaLN init
    }
    g->use_fp8(fp8 != kNoFp8, fp8 == kDelayed ? 4 : 0);
    g->to(torch::kCUDA);
    g->train();
    training::AdamWOptions ao;
    ao.fused = true;
    training::AdamW opt(training::named_parameters(*g), ao);
    training::GradientStep step(g, g->parameters(), {/*autocast=*/true, /*max_grad_norm=*/1.0, graph});
    EXPECT_EQ(step.graphed(), graph);
    torch::cuda::manual_seed_all(21);
    const auto scan = sampling::scan_order("raster", cfg.seq_len);
    std::vector<double> stats;
    for (int64_t i = 0; i < 4; ++i) {
      auto d = training::draw_objective(8, 0, 8, scan, 1.0, 0.1, 3, i);
      auto st = step.run(s.tokens, s.labels, d).cpu();
      for (int j = 0; j < 3; ++j) stats.push_back(st[j].item<double>());
      if (auto* h = g->fp8_history()) {
        h->advance();
        if (fp8 == kDelayed) EXPECT_TRUE(h->primed()) << "step " << i;  // (nudged off the zero-adaLN init)
      }
      opt.step(1e-3);
    }
    std::vector<torch::Tensor> w;
    for (auto& p : g->parameters()) w.push_back(p.detach().flatten());
    return std::make_pair(stats, torch::cat(w));
  };
  for (int fp8 : {kNoFp8, kCurrent, kDelayed}) {
    auto [se, we] = run(false, fp8);
    auto [sg, wg] = run(true, fp8);
    ASSERT_EQ(se.size(), sg.size());
    for (size_t i = 0; i < se.size(); ++i)
      EXPECT_EQ(se[i], sg[i]) << "fp8 " << fp8 << " step " << i / 3 << " stat " << i % 3;
    EXPECT_TRUE(torch::equal(we, wg)) << "fp8 " << fp8 << " max weight difference " << (we - wg).abs().max().item<double>();
  }
}

// SIGTERM mid-run: the trainer checkpoints and exits 0; --resume then ends with exactly the
// weights of an uninterrupted run, whatever step the signal arrived at.
// SIGTERM checkpoints at the step it arrives and exits 0; the checkpoint equals the one an
// uninterrupted run writes at that step (--stop-after), and resuming both gives the same weights.
// The run is far too long (10^6 steps) to end before the signal, so the test cannot skip.
TEST(TrainRar, SigtermCheckpointsAndResumeEndsTheSame) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  const std::string args = " --data " + data + " --device cpu --steps 1000000" + tiny_model_args() +
                           " training.per_gpu_batch_size=4 lr_scheduler.params.warmup_steps=2"
                           " experiment.save_every=0 experiment.log_every=1";
  const std::string cmd = std::string(RAR_BIN) + " train --out " + dir / "cut" + args + " > " + dir / "cut.log" + " 2>&1";
  // Start it, wait for a few logged steps, send SIGTERM, collect the exit status.
  const std::string script = cmd + " & pid=$!; for i in $(seq 1 3000); do n=$(wc -l < " + dir / "cut/metrics.jsonl" +
                             " 2>/dev/null || echo 0); [ \"$n\" -ge 5 ] && break; sleep 0.02; done; kill -TERM $pid; wait $pid";
  const int st = std::system(("bash -c '" + script + "'").c_str());
  const std::string log = read_bytes(dir / "cut.log");
  ASSERT_EQ(st, 0) << log;
  const size_t at = log.find("stopped at step ");
  ASSERT_NE(at, std::string::npos) << log;
  const int64_t k = std::stoll(log.substr(at + 16));
  ASSERT_GE(k, 5) << log;

  auto ref = run_rar("train --out " + dir / "ref" + args + " --stop-after " + std::to_string(k));
  ASSERT_EQ(ref.status, 0) << ref.output;
  auto same = [&](const char* what) {
    auto a = io::read_safetensors(dir / "ref/generator.safetensors");
    auto b = io::read_safetensors(dir / "cut/generator.safetensors");
    ASSERT_EQ(a.names(), b.names());
    for (const auto& n : a.names()) EXPECT_TRUE(a.at(n).equal(b.at(n))) << what << " " << n;
  };
  same("at the signal");
  for (const char* run : {"ref", "cut"}) {
    auto r = run_rar("train --out " + dir / run + args + " --resume --stop-after 3");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("stopped at step " + std::to_string(k + 3)), std::string::npos) << r.output;
  }
  same("after resuming");
}

// training.max_minutes ends a run like the end of its schedule (checkpoint, final validation),
// and --resume continues it to the same weights as an uninterrupted run.
TEST(TrainRar, TimeBudgetEndsLikeTheScheduleAndResumeContinues) {
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  const std::string args = " --data " + data + " --val " + data + " --device cpu --steps 5" + tiny_model_args() +
                           " training.per_gpu_batch_size=4 lr_scheduler.params.warmup_steps=2 experiment.eval_every=0";
  auto full = run_rar("train --out " + dir / "full" + args);
  ASSERT_EQ(full.status, 0) << full.output;
  // a budget of 0.06 µs runs out at once: before the first step or, on a fast clock, soon after
  auto cut = run_rar("train --out " + dir / "cut" + args + " training.max_minutes=1e-9");
  ASSERT_EQ(cut.status, 0) << cut.output;
  const size_t at = cut.output.find("reached at step ");
  ASSERT_NE(at, std::string::npos) << cut.output;
  const int64_t k = std::stoll(cut.output.substr(at + 16));
  ASSERT_LT(k, 5) << cut.output;
  EXPECT_NE(cut.output.find("validation step " + std::to_string(k)), std::string::npos) << cut.output;
  auto val = metric_rows(dir / "cut/metrics.jsonl", "val/nll");
  ASSERT_EQ(val.size(), 1u);
  EXPECT_EQ(val[0]["step"].get<int64_t>(), k);
  EXPECT_TRUE(val[0].contains("minutes"));
  auto rest = run_rar("train --out " + dir / "cut" + args + " --resume");
  ASSERT_EQ(rest.status, 0) << rest.output;
  EXPECT_NE(rest.output.find("finished at step 5"), std::string::npos) << rest.output;
  auto a = io::read_safetensors(dir / "full/generator.safetensors");
  auto b = io::read_safetensors(dir / "cut/generator.safetensors");
  for (const auto& n : a.names()) EXPECT_TRUE(a.at(n).equal(b.at(n))) << n;
}

// TensorBoard event files beside metrics.jsonl: TFRecord framing with real CRC-32C (the known
// check value of "123456789"), every scalar of every metrics row at its step, the sample grids as
// PNG images, and a resumed run's file without repeated steps (the records after the
// checkpoint dropped, as metrics.jsonl's rows are). Every record read back through protobuf with
// both CRCs checked; a flipped byte is a one-line error naming the record.
TEST(TrainRar, TensorBoardEventFilesHoldEveryRowOnceAndTheGrids) {
  if (!io::event_files_available()) GTEST_SKIP() << "a build without protobuf / ISA-L";
  EXPECT_EQ(io::crc32c("123456789", 9), 0xE3069283u);
  TempDir dir;
  const std::string data = write_tiny_tokens(dir);
  model::VQModel vq(test_support::tiny_vq_config());
  model::save_vq(dir / "vq.safetensors", vq);
  const std::string args = " --data " + data + " --out " + dir / "run" + " --tokenizer " + dir / "vq.safetensors" +
                           " --device cpu --steps 6 experiment.generate_every=3 experiment.save_every=2" +
                           tiny_model_args() + " training.per_gpu_batch_size=4";
  auto cut = run_rar("train" + args + " --stop-after 3");
  ASSERT_EQ(cut.status, 0) << cut.output;
  // as if killed after step 3's records but before its checkpoint: the resume starts at step 2
  remove_tree(dir / "run/checkpoints/step-00000003");
  auto rest = run_rar("train" + args + " --resume");
  ASSERT_EQ(rest.status, 0) << rest.output;
  ASSERT_NE(rest.output.find("(step 2)"), std::string::npos) << rest.output;
  // a finished run resumed (as after a kill once its last checkpoint was written): the end's
  // records, written after that checkpoint at its own step, come once
  auto again = run_rar("train" + args + " --resume");
  ASSERT_EQ(again.status, 0) << again.output;
  ASSERT_NE(again.output.find("(step 6)"), std::string::npos) << again.output;
  const auto files = list_dir(dir / "run/tensorboard");
  ASSERT_EQ(files.size(), 1u);
  ASSERT_EQ(files[0].rfind("events.out.tfevents.", 0), 0u);
  const auto records = io::read_event_file(dir / "run/tensorboard/" + files[0]);
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records[0].file_version, "brain.Event:2");
  std::map<int64_t, std::map<std::string, double>> scalars;
  std::vector<int64_t> image_steps;
  for (size_t i = 1; i < records.size(); ++i) {
    for (const auto& [tag, v] : records[i].scalars) {
      EXPECT_EQ(scalars[records[i].step].count(tag), 0u) << "step " << records[i].step << " " << tag << " twice";
      scalars[records[i].step][tag] = v;
    }
    for (const auto& [tag, png] : records[i].images) {
      EXPECT_EQ(tag, "samples");
      EXPECT_EQ(io::decode_image(png, "event image").dim(), 3);
      image_steps.push_back(records[i].step);
    }
  }
  const auto rows = metric_rows(dir / "run/metrics.jsonl", "loss");
  ASSERT_EQ(rows.size(), 6u);
  for (const auto& row : rows) {
    const int64_t step = row["step"].get<int64_t>();
    ASSERT_TRUE(scalars.count(step)) << step;
    for (const char* k : {"loss", "accuracy", "lr", "randomness", "grad_norm"})
      EXPECT_EQ(scalars[step].at(k), static_cast<float>(row[k].get<double>())) << step << " " << k;
  }
  EXPECT_EQ(scalars.size(), 6u);
  EXPECT_EQ(image_steps, (std::vector<int64_t>{3, 6}));  // the grid of step 3 once, although step 3 ran twice
  // a damaged record: named
  std::string bytes = read_bytes(dir / "run/tensorboard/" + files[0]);
  bytes[bytes.size() / 2] ^= 0x40;
  write_bytes(dir / "damaged.tfevents", bytes);
  EXPECT_RAR_ERROR(io::read_event_file(dir / "damaged.tfevents"), "damaged.tfevents: record ");
}

// What a kill leaves for the next start (tests/torture.sh kills runs at random): a resume keeps the
// file's name and drops a last record cut short mid-append along with the steps after the
// checkpoint; a start from scratch removes the event file of an earlier start that never reached
// a checkpoint (one file per run, as metrics.jsonl restarts), and a resume into a folder of two
// files is refused naming it.
TEST(TrainRar, EventFileAfterAKillResumesUnderItsNameWithoutACutRecord) {
  if (!io::event_files_available()) GTEST_SKIP() << "a build without protobuf / ISA-L";
  TempDir dir;
  const std::string tb = dir / "tb";
  std::string path;
  {
    io::EventFileWriter w(tb, -1);
    for (int64_t s = 1; s <= 4; ++s) w.scalars(s, {{"loss", 1.0 / s}});
    w.flush();
    path = w.path();
  }
  const std::string whole = read_bytes(path);
  const size_t first = 16 + static_cast<unsigned char>(whole[0]);  // the version record's length (< 256)
  write_bytes(path, whole + whole.substr(first, 13));  // the start of a record: cut short
  EXPECT_RAR_ERROR(io::read_event_file(path), "is cut short");
  {
    io::EventFileWriter w(tb, 2);
    EXPECT_EQ(w.path(), path);
    w.scalars(3, {{"loss", 0.25}});
    w.flush();
  }
  std::vector<int64_t> steps;
  for (const auto& r : io::read_event_file(path))
    if (r.file_version.empty()) steps.push_back(r.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3}));
  // a start from scratch: the earlier file goes
  { io::EventFileWriter w(tb, -1); }
  ASSERT_EQ(list_dir(tb).size(), 1u);
  const std::string fresh = join_path(tb, list_dir(tb)[0]);
  EXPECT_EQ(io::read_event_file(fresh).size(), 1u);  // the version record alone
  write_bytes(join_path(tb, "events.out.tfevents.1.other"), read_bytes(fresh));
  EXPECT_RAR_ERROR(io::EventFileWriter(tb, 2), "holds 2 event files");
}
