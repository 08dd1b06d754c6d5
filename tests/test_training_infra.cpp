// The pieces every trainer shares: YAML config (published layout, overrides), the learning-rate and
// randomness schedules, AdamW (against a hand-computed step and LibTorch's own optimizer), the
// epoch sampler (coverage, resume, rank slices), and atomic keep-last-K checkpoints.
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <sstream>

#include "data/epoch_sampler.h"
#include "helpers.h"
#include "io/image.h"
#include "model/generator.h"
#include "training/adamw.h"
#include "training/checkpoints.h"
#include "training/config.h"
#include "training/schedule.h"
#include "training/training_run.h"
#include "util/atomic_file.h"
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

// ---------------------------------------------------------------- the run skeleton (run_training)

namespace {

// A job whose "model" is one number w and whose every piece is deterministic: the run skeleton's
// decisions (when to log, save, evaluate, stop, resume, fail) are what these tests observe. It
// records what the loop asked of it.
struct FakeJob : training::TrainingJob {
  std::string dir;
  double w = 1.0, window_loss = 0;
  int64_t nan_at = -1;       // gradients(step) reports a NaN loss at this step
  int64_t gradient_calls = 0, updates = 0, finished_at = -1, restored_at = -1;
  std::vector<int64_t> evaluated_final;
  explicit FakeJob(std::string out) : dir(std::move(out)) {}
  std::string name() const override { return "fake"; }
  void restore(const training::TrainCheckpoint& ck, const std::string&) override {
    w = ck.model.at("w").item<double>();
    window_loss = ck.state.value("window_loss", 0.0);  // the open log window's sum, as a trainer keeps it
    restored_at = ck.state.at("step").get<int64_t>();
  }
  training::StepStats gradients(int64_t step, const std::function<training::StopFlags()>&) override {
    ++gradient_calls;
    training::StepStats st;
    st.loss = step == nan_at ? std::nan("") : w * w;
    st.grad_norm = 2 * std::abs(w);
    window_loss += st.loss;
    return st;
  }
  void update(int64_t step) override {
    ++updates;
    w -= 0.1 * w + 0.01 * static_cast<double>(step);  // depends on the step: a wrong resume step shows
  }
  training::LogLine log_window(int64_t, const training::LogWindow& win) override {
    training::LogLine line;
    line.row = {{"loss", window_loss / static_cast<double>(win.steps)}, {"w", w}};
    window_loss = 0;
    return line;
  }
  io::StateDict weights() const override {
    io::StateDict sd;
    sd.set("w", torch::tensor({w}, torch::kFloat64));
    return sd;
  }
  training::TrainCheckpoint checkpoint(int64_t) override {
    training::TrainCheckpoint ck;
    ck.model = weights();
    ck.state["window_loss"] = window_loss;
    return ck;
  }
  void export_weights() override { write_file_atomic(join_path(dir, "w.txt"), std::to_string(w)); }
  nlohmann::json evaluate(int64_t step, bool final) override {
    if (!final) return nullptr;
    evaluated_final.push_back(step);
    return {{"final_w", w}};
  }
  void finish(int64_t step, double) override { finished_at = step; }
};

training::RunSettings fake_settings(const std::string& out, int64_t total) {
  training::RunSettings s;
  s.output_dir = out;
  s.lr.total_steps = total;
  s.log_every = 2;
  s.save_every = 2;
  s.tensorboard = false;
  return s;
}

// The metrics rows without the timing fields, as text.
std::vector<std::string> rows_of(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(read_bytes(path));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"elapsed_s", "minutes"}) j.erase(k);
    out.push_back(j.dump());
  }
  return out;
}

void run_fake(const training::RunSettings& s, FakeJob& job, training::RunControl control = {}) {
  auto lock = training::prepare_run_folder(s, control.resume);
  training::run_training(s, Config::from_yaml("model: {w: 1}\n", "fake.yaml"), job, control);
}

}  // namespace

// An uninterrupted run: a metrics row every log window and at the end, a checkpoint every
// save_every steps (the last one once, by the end of the run), the final evaluation and finish
// at the last step.
TEST(RunTraining, RunsLogsSavesAndFinishesAtTheLastStep) {
  TempDir dir;
  FakeJob job(dir / "run");
  run_fake(fake_settings(dir / "run", 6), job);
  EXPECT_EQ(job.gradient_calls, 6);
  EXPECT_EQ(job.updates, 6);
  EXPECT_EQ(job.finished_at, 6);
  EXPECT_EQ(job.evaluated_final, (std::vector<int64_t>{6}));
  EXPECT_EQ(list_dir(dir / "run/checkpoints"), (std::vector<std::string>{"step-00000002", "step-00000004", "step-00000006"}));
  const auto rows = rows_of(dir / "run/metrics.jsonl");
  ASSERT_EQ(rows.size(), 4u);  // steps 2, 4, 6 and the final evaluation
  EXPECT_NE(rows[3].find("\"final_w\""), std::string::npos) << rows[3];
  EXPECT_EQ(read_bytes(dir / "run/w.txt"), std::to_string(job.w));
}

// --stop-after (an interrupt): a checkpoint at the step reached, no final evaluation; --resume
// continues from it to the uninterrupted run's weights and log, no row twice — also the row of the
// log window the interruption cut (steps 3-4, half before, half after). A resumed finished run
// repeats nothing.
TEST(RunTraining, InterruptAndResumeEqualTheUninterruptedRun) {
  TempDir dir;
  FakeJob whole(dir / "whole");
  run_fake(fake_settings(dir / "whole", 6), whole);
  FakeJob first(dir / "cut");
  run_fake(fake_settings(dir / "cut", 6), first, {false, 3});
  EXPECT_EQ(first.updates, 3);
  EXPECT_EQ(first.finished_at, -1);
  EXPECT_TRUE(first.evaluated_final.empty());
  EXPECT_TRUE(path_exists(dir / "cut/checkpoints/step-00000003"));
  FakeJob rest(dir / "cut");
  run_fake(fake_settings(dir / "cut", 6), rest, {true, 0});
  EXPECT_EQ(rest.restored_at, 3);
  EXPECT_EQ(rest.updates, 3);
  EXPECT_EQ(rest.w, whole.w);
  EXPECT_EQ(rows_of(dir / "cut/metrics.jsonl"), rows_of(dir / "whole/metrics.jsonl"));
  FakeJob again(dir / "cut");  // resuming a finished run: its end once more, not its steps
  run_fake(fake_settings(dir / "cut", 6), again, {true, 0});
  EXPECT_EQ(again.gradient_calls, 0);
  EXPECT_EQ(again.finished_at, 6);
  EXPECT_EQ(rows_of(dir / "cut/metrics.jsonl"), rows_of(dir / "whole/metrics.jsonl"));
  // a fresh run over a used folder is refused
  FakeJob fresh(dir / "cut");
  EXPECT_RAR_ERROR(run_fake(fake_settings(dir / "cut", 6), fresh), "already holds the checkpoints of a run");
}

// The time budget ends the run like the end of the schedule (checkpoint, final evaluation,
// finish) at the step reached — here a budget already spent when a resumed run starts, so the
// step is known — and --resume with more time continues to the last step.
TEST(RunTraining, TimeBudgetEndsLikeTheScheduleAndResumeContinues) {
  TempDir dir;
  auto s = fake_settings(dir / "run", 6);
  FakeJob first(dir / "run");
  run_fake(s, first, {false, 2});
  s.max_minutes = 1e-12;
  FakeJob spent(dir / "run");
  run_fake(s, spent, {true, 0});
  EXPECT_EQ(spent.updates, 0);
  EXPECT_EQ(spent.finished_at, 2);
  EXPECT_EQ(spent.evaluated_final, (std::vector<int64_t>{2}));
  EXPECT_NE(rows_of(dir / "run/metrics.jsonl").back().find("\"final_w\""), std::string::npos);
  s.max_minutes = 0;
  FakeJob rest(dir / "run");
  run_fake(s, rest, {true, 0});
  EXPECT_EQ(rest.restored_at, 2);
  EXPECT_EQ(rest.updates, 4);
  EXPECT_EQ(rest.finished_at, 6);
  FakeJob whole(dir / "whole");
  run_fake(fake_settings(dir / "whole", 6), whole);
  EXPECT_EQ(rest.w, whole.w);
}

// A non-finite loss stops before the update with one line naming the step and the last good
// checkpoint; nothing is saved after it.
TEST(RunTraining, NonFiniteLossStopsBeforeTheUpdateNamingTheLastCheckpoint) {
  TempDir dir;
  FakeJob job(dir / "run");
  job.nan_at = 3;
  EXPECT_RAR_ERROR(run_fake(fake_settings(dir / "run", 6), job), "step 3: loss is nan");
  EXPECT_EQ(job.updates, 3);
  EXPECT_EQ(list_dir(dir / "run/checkpoints"), (std::vector<std::string>{"step-00000002"}));
  FakeJob again(dir / "run");
  again.nan_at = 3;
  try {
    run_fake(fake_settings(dir / "run", 6), again, {true, 0});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Last good checkpoint: " + dir / "run/checkpoints/step-00000002"),
              std::string::npos) << e.what();
  }
}
