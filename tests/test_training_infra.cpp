// The pieces every trainer shares: YAML config (published layout, overrides), the learning-rate and
// randomness schedules, AdamW (against a hand-computed step and LibTorch's own optimizer), the
// epoch sampler (coverage, resume, rank slices), and atomic keep-last-K checkpoints.
#include <torch/torch.h>
#include <unistd.h>

#include "data/epoch_sampler.h"
#include "helpers.h"
#include "io/image.h"
#include "model/generator.h"
#include "training/adamw.h"
#include "training/checkpoints.h"
#include "training/config.h"
#include "training/schedule.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/output_lock.h"

using namespace rar;
using namespace rar::test;
using training::Config;

TEST(Config, ReadsThePublishedYamlConventions) {
  auto c = Config::from_yaml(R"(
experiment:
  max_train_examples: 1_281_167
  name: "rar-b"
optimizer:
  params:
    learning_rate: 4e-4
    beta2: 0.96
lr_scheduler:
  params:
    learning_rate: ${optimizer.params.learning_rate}
    warmup_steps: 62_500
model:
  generator:
    use_checkpoint: False
    dims: [1, 2, 4]
    quoted: "123"
)", "rar.yaml");
  EXPECT_EQ(c.get_int("experiment.max_train_examples"), 1281167);
  EXPECT_EQ(c.get_string("experiment.name"), "rar-b");
  EXPECT_DOUBLE_EQ(c.get_double("optimizer.params.learning_rate"), 4e-4);
  EXPECT_DOUBLE_EQ(c.get_double("lr_scheduler.params.learning_rate"), 4e-4);
  EXPECT_EQ(c.get_int("lr_scheduler.params.warmup_steps"), 62500);
  EXPECT_FALSE(c.get_bool("model.generator.use_checkpoint"));
  EXPECT_EQ(c.get_int_list("model.generator.dims"), (std::vector<int64_t>{1, 2, 4}));
  EXPECT_EQ(c.get_string("model.generator.quoted"), "123");
  EXPECT_EQ(c.get_int("missing.key", 7), 7);
  EXPECT_RAR_ERROR(c.get_int("missing.key"), "missing config key 'missing.key'");
  EXPECT_RAR_ERROR(c.get_int("experiment.name"), "'experiment.name' must be an integer");

  // Overrides: typed values, references follow, typos are errors, +key adds.
  c.apply_override("optimizer.params.learning_rate=1e-3");
  EXPECT_DOUBLE_EQ(c.get_double("lr_scheduler.params.learning_rate"), 1e-3);
  c.apply_override("model.generator.dims=[8, 16]");
  EXPECT_EQ(c.get_int_list("model.generator.dims"), (std::vector<int64_t>{8, 16}));
  EXPECT_RAR_ERROR(c.apply_override("optimizer.params.learnig_rate=1"), "no key 'optimizer.params.learnig_rate'");
  EXPECT_RAR_ERROR(c.apply_override("no_equals_sign"), "expected key.path=value");
  c.apply_override("+data.extra.path=/x/y");
  EXPECT_EQ(c.get_string("data.extra.path"), "/x/y");

  // The effective config written to YAML reads back to the same values (references resolved).
  auto back = Config::from_yaml(c.to_yaml(), "back");
  EXPECT_EQ(back.resolved(), c.resolved());
  EXPECT_EQ(back.get_string("model.generator.quoted"), "123");
  EXPECT_DOUBLE_EQ(back.get_double("lr_scheduler.params.learning_rate"), 1e-3);
}

TEST(Config, RejectsBadFilesWithOneLine) {
  EXPECT_RAR_ERROR(Config::from_yaml("a: [1, 2", "bad.yaml"), "bad.yaml: not valid YAML");
  EXPECT_RAR_ERROR(Config::from_yaml("- 1\n- 2\n", "list.yaml"), "list.yaml: expected a mapping");
  auto c = Config::from_yaml("a: ${b.c}\n", "ref.yaml");
  EXPECT_RAR_ERROR(c.get_int("a"), "refers to a key that does not exist");
  auto loop = Config::from_yaml("a: ${b}\nb: ${a}\n", "loop.yaml");
  EXPECT_RAR_ERROR(loop.get_int("a"), "nest too deep");
}

TEST(Config, ComposeMergesUserFileOverDefaultsThenOverrides) {
  TempDir dir;
  write_bytes(dir / "user.yaml", "training:\n  steps: 20\nexperiment:\n  project: x\n");
  testing::internal::CaptureStderr();
  auto c = training::compose_config("training:\n  steps: 10\n  lr: 0.5\n", dir / "user.yaml", {"training.lr=0.25"});
  const std::string said = testing::internal::GetCapturedStderr();
  EXPECT_EQ(c.get_int("training.steps"), 20);
  EXPECT_DOUBLE_EQ(c.get_double("training.lr"), 0.25);
  EXPECT_EQ(c.get_string("experiment.project"), "x");  // kept, and reported as unused (only it)
  // (the defaults have no `experiment` section: the whole section is the unused key)
  EXPECT_NE(said.find("keys this command does not use (kept): experiment\n"), std::string::npos) << said;
  EXPECT_EQ(said.find("training."), std::string::npos) << said;
  // merge() itself names exactly the keys the base lacks
  auto base = training::Config::from_yaml("a:\n  b: 1\n", "<base>");
  auto over = training::Config::from_yaml("a:\n  b: 2\n  c: 3\nd: 4\n", "<over>");
  EXPECT_EQ(base.merge(over), (std::vector<std::string>{"a.c", "d"}));
  EXPECT_EQ(base.get_int("a.b"), 2);
}

TEST(Schedule, WarmupThenCosineToEndAndRandomness) {
  training::LrSchedule s;
  s.base_lr = 4e-4;
  s.end_lr = 1e-5;
  s.warmup_steps = 100;
  s.total_steps = 1100;
  EXPECT_DOUBLE_EQ(s.at(0), 0.0);  // LambdaLR: the first update runs at λ(0) = 0
  EXPECT_DOUBLE_EQ(s.at(50), 2e-4);
  EXPECT_DOUBLE_EQ(s.at(100), 4e-4);
  EXPECT_NEAR(s.at(600), 1e-5 + (4e-4 - 1e-5) * 0.5, 1e-15);
  EXPECT_NEAR(s.at(1100), 1e-5, 1e-15);
  EXPECT_NEAR(s.at(5000), 1e-5 + (4e-4 - 1e-5) * 0.5 * (1 + std::cos(M_PI * 4.9)), 1e-15);  // past the end: cos continues
  s.kind = "constant";
  EXPECT_DOUBLE_EQ(s.at(700), 4e-4);
  s.kind = "linear-ish";
  EXPECT_RAR_ERROR(s.at(700), "expected cosine or constant");

  EXPECT_EQ(training::randomness(0, 125000, 187500), 1.0);
  EXPECT_EQ(training::randomness(124999, 125000, 187500), 1.0);
  EXPECT_DOUBLE_EQ(training::randomness(156250, 125000, 187500), 0.5);
  EXPECT_EQ(training::randomness(187500, 125000, 187500), 0.0);
  EXPECT_EQ(training::randomness(250000, 125000, 187500), 0.0);
}

TEST(AdamW, FirstStepMatchesTheClosedForm) {
  auto p = torch::tensor({1.0f}, torch::requires_grad());
  training::AdamWOptions o;
  o.weight_decay = 0.1;
  training::AdamW opt({{"w", p}}, o, [](const std::string&, const torch::Tensor&) { return false; });
  p.mutable_grad() = torch::tensor({0.5f});
  opt.step(0.1);
  // p·(1 − lr·wd) = 0.99, then − lr · m̂ / (√v̂ + ε) = 0.1 · 0.5 / 0.5
  EXPECT_NEAR(p.item<float>(), 0.89f, 1e-6);
  EXPECT_EQ(opt.steps(), 1);
}

TEST(AdamW, PlainAndFusedMatchLibTorchAdamW) {
  torch::manual_seed(0);
  auto w0 = torch::randn({6, 5}), b0 = torch::randn({5});
  auto grads = torch::randn({12, 6, 5}), bgrads = torch::randn({12, 5});
  auto run_ours = [&](bool fused) {
    auto w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
    training::AdamWOptions o;
    o.beta1 = 0.9;
    o.beta2 = 0.96;
    o.weight_decay = 0.03;
    o.fused = fused;
    training::AdamW opt({{"fc.weight", w}, {"fc.bias", b}}, o);
    EXPECT_EQ(opt.decayed(), std::vector<std::string>{"fc.weight"});
    for (int i = 0; i < 12; ++i) {
      w.mutable_grad() = grads[i].clone();
      b.mutable_grad() = bgrads[i].clone();
      opt.step(1e-2 * (i + 1) / 12.0);
    }
    return std::make_pair(w.detach(), b.detach());
  };
  auto w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{w},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.96}).weight_decay(0.03)));
  groups.emplace_back(std::vector<torch::Tensor>{b}, std::make_unique<torch::optim::AdamWOptions>(
                                                         torch::optim::AdamWOptions(1e-2).betas({0.9, 0.96}).weight_decay(0)));
  torch::optim::AdamW ref(groups, torch::optim::AdamWOptions(1e-2));
  for (int i = 0; i < 12; ++i) {
    for (auto& g : ref.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(1e-2 * (i + 1) / 12.0);
    w.mutable_grad() = grads[i].clone();
    b.mutable_grad() = bgrads[i].clone();
    ref.step();
  }
  for (bool fused : {false, true}) {
    auto [ow, ob] = run_ours(fused);
    EXPECT_TRUE(torch::allclose(ow, w.detach(), 1e-6, 1e-6)) << "fused=" << fused;
    EXPECT_TRUE(torch::allclose(ob, b.detach(), 1e-6, 1e-6)) << "fused=" << fused;
  }
}

TEST(AdamW, StateRoundTripsAndContinuesIdentically) {
  torch::manual_seed(1);
  auto init = torch::randn({4, 3});
  auto grads = torch::randn({6, 4, 3});
  auto w1 = init.clone().requires_grad_();
  training::AdamW a({{"w", w1}}, {});
  for (int i = 0; i < 6; ++i) {
    w1.mutable_grad() = grads[i].clone();
    a.step(1e-2);
  }
  auto w2 = init.clone().requires_grad_();
  training::AdamW b({{"w", w2}}, {});
  for (int i = 0; i < 3; ++i) {
    w2.mutable_grad() = grads[i].clone();
    b.step(1e-2);
  }
  auto saved = b.state();
  auto w3 = w2.detach().clone().requires_grad_();
  training::AdamW c({{"w", w3}}, {});
  c.load_state(saved);
  EXPECT_EQ(c.steps(), 3);
  for (int i = 3; i < 6; ++i) {
    w3.mutable_grad() = grads[i].clone();
    c.step(1e-2);
  }
  EXPECT_TRUE(w3.detach().equal(w1.detach()));
  auto other = torch::zeros({2, 2}, torch::requires_grad());
  training::AdamW d({{"w", other}}, {});
  EXPECT_RAR_ERROR(d.load_state(saved), "optimizer state 'exp_avg.w' has shape");
}

TEST(AdamW, PublishedDecayGroupsOnTheGenerator) {
  model::GeneratorConfig g;
  g.hidden = 32;
  g.layers = 1;
  g.heads = 2;
  g.mlp = 64;
  g.codebook = 16;
  g.seq_len = 4;
  g.classes = 3;
  model::Generator m(g);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& kv : m->named_parameters()) named.emplace_back(kv.key(), kv.value());
  training::AdamW opt(named, {});
  auto d = opt.decayed(), n = opt.not_decayed();
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  EXPECT_TRUE(in(d, "cls_token"));
  EXPECT_TRUE(in(d, "blocks.0.adaLN_modulation.1.weight"));
  EXPECT_TRUE(in(d, "blocks.0.attn.qkv.weight"));
  EXPECT_TRUE(in(d, "lm_head.weight"));
  EXPECT_TRUE(in(n, "adaln_before_head.adaLN_modulation.1.weight"));
  EXPECT_TRUE(in(n, "pos_embed"));
  EXPECT_TRUE(in(n, "embeddings.weight"));
  EXPECT_TRUE(in(n, "blocks.0.attn.q_norm.weight"));
  EXPECT_TRUE(in(n, "lm_head.bias"));
}

TEST(EpochSampler, EachEpochIsAPermutationAndResumeRepeatsBatches) {
  data::EpochSampler s(10, 4, 7);
  std::vector<int64_t> seen;
  for (int i = 0; i < 5; ++i)
    for (int64_t j : s.next()) seen.push_back(j);
  ASSERT_EQ(seen.size(), 20u);
  for (int e = 0; e < 2; ++e) {
    std::vector<int64_t> epoch(seen.begin() + 10 * e, seen.begin() + 10 * (e + 1));
    std::sort(epoch.begin(), epoch.end());
    for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(epoch[i], i);
  }
  EXPECT_NE(std::vector<int64_t>(seen.begin(), seen.begin() + 10), std::vector<int64_t>(seen.begin() + 10, seen.end()));
  data::EpochSampler r(10, 4, 7);
  r.set_position(8);
  EXPECT_EQ(r.next(), std::vector<int64_t>(seen.begin() + 8, seen.begin() + 12));
  // Two ranks split every global batch into contiguous halves.
  data::EpochSampler r0(10, 4, 7, 0, 2), r1(10, 4, 7, 1, 2);
  for (int i = 0; i < 5; ++i) {
    auto a = r0.next(), b = r1.next();
    a.insert(a.end(), b.begin(), b.end());
    EXPECT_EQ(a, std::vector<int64_t>(seen.begin() + 4 * i, seen.begin() + 4 * i + 4));
  }
  EXPECT_RAR_ERROR(data::EpochSampler(10, 3, 0, 0, 2), "multiple of the world size");
  EXPECT_RAR_ERROR(data::EpochSampler(0, 4, 0), "data is empty");
}

TEST(TrainCheckpoints, AtomicFoldersKeepLastKAndRoundTrip) {
  TempDir dir;
  const std::string root = dir / "checkpoints";
  EXPECT_EQ(training::latest_checkpoint(root), "");
  for (int64_t step : {100, 200, 300}) {
    training::TrainCheckpoint c;
    c.model.set("w", torch::full({2}, static_cast<float>(step)));
    c.optimizer.set("step", torch::tensor(step));
    training::save_rng_states(c.optimizer);
    c.state = {{"data_position", step * 8}};
    c.config_yaml = "a: 1\n";
    training::save_checkpoint(root, step, c, 2);
  }
  EXPECT_EQ(list_dir(root), (std::vector<std::string>{"step-00000200", "step-00000300"}));
  make_dirs(join_path(root, ".tmp-step-00000400-1"));  // an interrupted write is never picked up
  make_dirs(join_path(root, "step-00000500"));          // nor a folder without trainer.json
  const std::string latest = training::latest_checkpoint(root);
  EXPECT_EQ(latest, join_path(root, "step-00000300"));
  auto c = training::load_checkpoint(latest);
  EXPECT_EQ(c.state["step"], 300);
  EXPECT_EQ(c.state["data_position"], 2400);
  EXPECT_TRUE(c.model.at("w").equal(torch::full({2}, 300.0f)));
  EXPECT_EQ(c.config_yaml, "a: 1\n");
  // RNG states restore the default generator's stream.
  training::load_rng_states(c.optimizer);
  auto a = torch::rand({3});
  training::load_rng_states(c.optimizer);
  EXPECT_TRUE(torch::rand({3}).equal(a));
  write_bytes(join_path(latest, "trainer.json"), "{not json");
  EXPECT_RAR_ERROR(training::load_checkpoint(latest), "trainer.json: not valid JSON");
}

// One process owns an output: a second lock on the same file is refused naming the holder's pid
// (flock locks belong to open files, so a second open in this process is a second holder), and
// the lock is free again once its holder ends.
TEST(OutputLock, SecondHolderIsRefusedWithThePidUntilTheFirstEnds) {
  TempDir dir;
  const std::string f = dir / ".lock";
  {
    OutputLock first(f, "the run");
    EXPECT_TRUE(first.held());
    EXPECT_RAR_ERROR(OutputLock(f, "the run"), "the run is in use by another rar process (pid " +
                                                   std::to_string(::getpid()) + ")");
  }
  OutputLock again(f, "the run");
  EXPECT_TRUE(again.held());
  EXPECT_RAR_ERROR(OutputLock(dir / "no/such/folder/.lock", "x"), "cannot open the lock file of x");
}

// The commands that write a resumable output refuse to start on one another process holds: the
// test holds each output's lock itself, so the refusal is certain (no race), before any work.
TEST(OutputLock, TrainSampleAndTokenizeRefuseAnOutputInUse) {
  TempDir dir;
  const std::string pid = std::to_string(::getpid());
  make_dirs(dir / "run");
  {
    OutputLock held(dir / "run/.lock", "x");
    auto r = run_rar("train --data " + dir / "none.rartok" + " --out " + dir / "run" + " --device cpu --steps 1");
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find(dir / "run" + " is in use by another rar process (pid " + pid + ")"), std::string::npos)
        << r.output;
  }
  make_dirs(dir / "s.npz.parts");
  {
    OutputLock held(dir / "s.npz.parts/.lock", "x");
    auto r = run_rar("sample --generator " + shared_ref("tiny_rar.bin") + " --tokenizer " + shared_ref("tiny_vq.bin") +
                     " --classes 1,2 --device cpu --out " + dir / "s.npz");
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find(dir / "s.npz" + " is in use by another rar process (pid " + pid + ")"), std::string::npos)
        << r.output;
    EXPECT_FALSE(path_exists(dir / "s.npz.parts/manifest.json")) << "the refused run wrote its manifest";
  }
  make_dirs(dir / "data/cats");
  io::write_image(dir / "data/cats/a.png", torch::zeros({8, 8, 3}, torch::kUInt8));
  make_dirs(dir / "t.rartok.parts");
  {
    OutputLock held(dir / "t.rartok.parts/.lock", "x");
    auto r = run_rar("tokenize --tokenizer " + shared_ref("tiny_vq.bin") + " --data " + dir / "data" + " --out " +
                     dir / "t.rartok");
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find(dir / "t.rartok" + " is in use by another rar process (pid " + pid + ")"), std::string::npos)
        << r.output;
  }
  // a folder where a file is expected: refused before any image is generated, nothing left behind
  make_dirs(dir / "d.npz");
  auto r = run_rar("sample --generator " + shared_ref("tiny_rar.bin") + " --tokenizer " + shared_ref("tiny_vq.bin") +
                   " --classes 1,2 --device cpu --out " + dir / "d.npz");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("is a folder; expected the path of a file"), std::string::npos) << r.output;
  EXPECT_EQ(list_dir(dir / "d.npz").size(), 0u);
  EXPECT_FALSE(path_exists(dir / "d.npz.parts"));
}
