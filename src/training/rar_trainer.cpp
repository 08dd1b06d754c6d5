// rar_trainer.cpp — see rar_trainer.h.
#include "training/rar_trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>

#include "data/epoch_sampler.h"
#include "data/jsonl_tokens.h"
#include "data/token_file.h"
#include "eval/nll.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/metrics_log.h"
#include "io/safetensors.h"
#include "model/ops/fp8.h"
#include "model/vqgan.h"
#include "model/weights.h"
#include "sampling/orders.h"
#include "sampling/sampler.h"
#include "training/adamw.h"
#include "training/optim_config.h"
#include "training/checkpoints.h"
#include "training/distributed.h"
#include "training/rar_objective.h"
#include "training/run_support.h"
#include "training/schedule.h"
#include "training/training_run.h"
#include "util/atomic_file.h"
#include "util/device.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::training {

const char* rar_defaults_yaml() {
  return R"(# rar train defaults: the published rar.yaml (RAR-B), plus our keys marked "ours"
experiment:
  project: rar_generation
  name: rar-b
  output_dir: runs/rar                # ours
  save_every: 50_000
  eval_every: 50_000                  # validation NLL (needs dataset.val_tokens)
  generate_every: 5_000               # sample grid (needs a tokenizer)
  log_every: 50
  tensorboard: true                   # ours: TensorBoard event files in <output_dir>/tensorboard
  keep_last: 3                        # ours: checkpoints kept
  eval_examples: 10_000               # ours: validation sequences scored (0 = all)
model:
  vq_model:
    codebook_size: 1024
    token_size: 256
    num_latent_tokens: 256
    pretrained_tokenizer_weight: ""   # tokenizer for sample grids ("" = no grids)
  generator:
    hidden_size: 768
    num_hidden_layers: 24
    num_attention_heads: 16
    intermediate_size: 3072
    dropout: 0.1
    attn_drop: 0.1
    class_label_dropout: 0.1
    image_seq_len: 256
    condition_num_classes: 1000
    randomize_temperature: 1.0
    guidance_scale: 16.0
    guidance_scale_pow: 2.75
    use_checkpoint: false
    checkpoint_layers: -1             # ours: with use_checkpoint, recompute only the first N blocks (-1 = all)
    recompute_mlp: false              # ours: every block recomputes fc1's output in backward instead of keeping it
    randomness_anneal_start: 125_000
    randomness_anneal_end: 187_500
    scan_order: raster                # ours: the order used when not permuting
dataset:
  train_tokens: ""                    # ours: .rartok from `rar tokenize`
  val_tokens: ""                      # ours: held-out .rartok for validation NLL
  params:
    pretokenization: ""               # the published code's .jsonl (used when train_tokens is empty: converted beside it once)
optimizer:
  name: adamw
  params:
    learning_rate: 4e-4
    beta1: 0.9
    beta2: 0.96
    weight_decay: 0.03
lr_scheduler:
  scheduler: cosine
  params:
    learning_rate: ${optimizer.params.learning_rate}
    warmup_steps: 62_500
    end_lr: 1e-5
training:
  gradient_accumulation_steps: 1
  per_gpu_batch_size: 64
  mixed_precision: bf16               # bf16 autocast on CUDA; CPU always runs fp32
  enable_tf32: true
  use_ema: false
  ema_decay: 0.9999                   # ours
  seed: 42
  max_train_steps: 250_000
  max_grad_norm: 1.0
  device: auto                        # ours
  max_minutes: 0                      # ours: stop (checkpointed) after this wall time
  init_from: ""                       # ours: start from these generator weights (fine-tuning)
  ddp_bucket_mb: 25                   # ours: gradient all-reduce bucket size (data parallel)
  ddp_grad_dtype: fp32                # ours: gradients all-reduced as fp32 or bf16 (half the traffic)
  ddp_exact: true                     # ours: sum the ranks' gradients in rank order (bit-identical to one process at any number of processes)
  cuda_graph: true                    # ours: capture each step in a CUDA graph where it can be (one process, no accumulation, no recomputed blocks)
  fused_kernels: true                 # ours: the fused CUDA kernels of the block's memory-bound steps (false: the plain LibTorch path, the reference)
  fp8: false                          # ours: the blocks' products (adaLN, qkv, proj, fc1, fc2) in fp8 (e4m3 inputs and weights, e5m2 gradients, one scale per tensor; Hopper)
  fp8_scaling: delayed                # ours: with fp8, scale each tensor by its largest magnitude over the last steps (delayed: the cast records it) or by its own (current: one more pass over it)
  fp8_amax_history: 16                # ours: the steps delayed scaling looks back over
)";
}

namespace {

// Delayed fp8 scaling's history in a checkpoint's optimizer file (model/fp8_history.h).
const std::string kFp8HistoryKey = "fp8.amax_history";

model::GeneratorConfig generator_config_of(const Config& c) {
  model::GeneratorConfig g;
  const std::string p = "model.generator.";
  g.hidden = c.get_int(p + "hidden_size");
  g.layers = c.get_int(p + "num_hidden_layers");
  g.heads = c.get_int(p + "num_attention_heads");
  g.mlp = c.get_int(p + "intermediate_size");
  g.seq_len = c.get_int(p + "image_seq_len");
  g.classes = c.get_int(p + "condition_num_classes");
  g.dropout = c.get_double(p + "dropout");
  g.attn_dropout = c.get_double(p + "attn_drop");
  g.codebook = c.get_int("model.vq_model.codebook_size");
  g.validate();
  return g;
}

// The run's settings, read once.
struct RarSettings {
  RunSettings run;
  model::GeneratorConfig gen;
  std::string train_tokens, val_tokens, tokenizer, init_from;
  std::string pretokenized;  // the published config's dataset.params.pretokenization (.jsonl), when no .rartok is given
  int64_t recomputed_layers = 0;  // blocks that recompute their activations in backward (use_checkpoint)
  bool recompute_mlp = false;     // every block's MLP recomputes fc1's output in backward
  int64_t anneal_start = 0, anneal_end = 0;
  double label_dropout = 0;
  std::string scan_order;
  int64_t local_batch = 0, accum = 1, eval_examples = 0;
  bool use_ema = false;
  double ema_decay = 0;
  double guidance = 0, guidance_power = 0, temperature = 1;  // the sample grids' settings
  double ddp_bucket_mb = 25;
  bool ddp_bf16 = false, ddp_exact = true;
  bool cuda_graph = true, fused_kernels = true, fp8 = false;
  int64_t fp8_delayed_history = 0;  // delayed fp8 scaling over this many steps (0: current scaling)

  static RarSettings from(const Config& c) {
    RarSettings s;
    s.run = RunSettings::from(c);
    s.gen = generator_config_of(c);
    s.train_tokens = c.get_string("dataset.train_tokens");
    if (s.train_tokens.empty()) s.pretokenized = c.get_string("dataset.params.pretokenization", "");
    check(!s.train_tokens.empty() || !s.pretokenized.empty(),
          "dataset.train_tokens is not set (a .rartok file from `rar tokenize`; --data; or the published config's "
          "dataset.params.pretokenization: a .jsonl)");
    s.val_tokens = c.get_string("dataset.val_tokens");
    s.tokenizer = c.get_string("model.vq_model.pretrained_tokenizer_weight");
    s.init_from = c.get_string("training.init_from");
    if (c.get_bool("model.generator.use_checkpoint")) {
      const int64_t n = c.get_int("model.generator.checkpoint_layers");
      s.recomputed_layers = n < 0 ? s.gen.layers : n;
    }
    s.recompute_mlp = c.get_bool("model.generator.recompute_mlp");
    s.anneal_start = c.get_int("model.generator.randomness_anneal_start");
    s.anneal_end = c.get_int("model.generator.randomness_anneal_end");
    check(s.anneal_end >= s.anneal_start, "randomness_anneal_end must be >= randomness_anneal_start");
    s.label_dropout = c.get_double("model.generator.class_label_dropout");
    s.scan_order = c.get_string("model.generator.scan_order");
    s.local_batch = c.get_int("training.per_gpu_batch_size");
    s.accum = c.get_int("training.gradient_accumulation_steps");
    check(s.local_batch > 0 && s.accum > 0, "per_gpu_batch_size, gradient_accumulation_steps and max_train_steps must be positive");
    s.eval_examples = c.get_int("experiment.eval_examples");
    s.use_ema = c.get_bool("training.use_ema");
    s.ema_decay = c.get_double("training.ema_decay");
    s.guidance = c.get_double("model.generator.guidance_scale");
    s.guidance_power = c.get_double("model.generator.guidance_scale_pow");
    s.temperature = c.get_double("model.generator.randomize_temperature");
    s.ddp_bucket_mb = c.get_double("training.ddp_bucket_mb");
    const std::string gdt = c.get_string("training.ddp_grad_dtype");
    check(gdt == "fp32" || gdt == "bf16", "training.ddp_grad_dtype: expected fp32 or bf16, got '", gdt, "'");
    s.ddp_bf16 = gdt == "bf16";
    s.cuda_graph = c.get_bool("training.cuda_graph");
    s.fused_kernels = c.get_bool("training.fused_kernels", true);
    s.fp8 = c.get_bool("training.fp8", false);
    // the scaling (always checked) and its history steer nothing without training.fp8
    const std::string scaling = c.get_string("training.fp8_scaling", "delayed");
    check(scaling == "current" || scaling == "delayed", "training.fp8_scaling: expected current or delayed, got '",
          scaling, "'");
    if (s.fp8 && scaling == "delayed") {
      s.fp8_delayed_history = c.get_int("training.fp8_amax_history", model::Fp8History::kDefaultLength);
      check(s.fp8_delayed_history >= 1 && s.fp8_delayed_history <= 4096,
            "training.fp8_amax_history: expected 1 to 4096 steps, got ", s.fp8_delayed_history);
    }
    s.ddp_exact = c.get_bool("training.ddp_exact");
    return s;
  }
};

// The published initialisation from the run's seed (or init_from's weights), on the device, the
// same on every rank.
model::Generator build_generator(const RarSettings& s, const torch::Device& device, DataParallel& dp) {
  torch::manual_seed(s.run.seed);
  model::Generator g(s.gen);  // the published init
  if (!s.init_from.empty()) {
    torch::NoGradGuard ng;
    model::load_weights(*g, io::read_checkpoint(s.init_from), s.init_from);
  }
  g->recompute_layers = s.recomputed_layers;
  g->set_recompute_mlp(s.recompute_mlp);
  if (s.fp8) model::check_fp8_device(device, "training.fp8");
  g->use_fp8(s.fp8, s.fp8_delayed_history);
  g->to(device);
  g->train();
  dp.broadcast(g->parameters());
  return g;
}

// The generator's pieces of the run (training/training_run.h), on one process or data-parallel.
class RarJob final : public TrainingJob {
 public:
  RarJob(const RarSettings& s, const Config& cfg, DataParallel& dp, const torch::Device& device,
         const data::TokenFile& train, const data::TokenFile* val)
      : s_(s), dp_(dp), device_(device), autocast_(s.run.bf16 && device.is_cuda()),
        cuda_index_(device.is_cuda() ? std::max<int>(0, device.index()) : -1), train_(train), val_(val),
        g_(build_generator(s, device, dp)), opt_(named_parameters(*g_), adamw_options(cfg)),
        scan_(sampling::scan_order(s.scan_order, s.gen.seq_len)),
        micro_global_(s.local_batch * dp.world()), global_batch_(micro_global_ * s.accum),
        sampler_(train.info().count, micro_global_, s.run.seed, dp.rank(), dp.world()), params_(g_->parameters()) {
    if (s.use_ema)
      for (auto& [n, p] : named_parameters(*g_)) ema_.emplace_back(n, p.detach().clone());  // fp32 copies
    if (dp.is_main() && !s.tokenizer.empty()) {
      tokenizer_ = std::make_unique<model::LoadedVQ>(model::load_vq(s.tokenizer, device));
      check(tokenizer_->cfg.codebook_size == s.gen.codebook, s.tokenizer, ": tokenizer has ",
            tokenizer_->cfg.codebook_size, " codes, the generator ", s.gen.codebook);
    }
    g_->use_path(s.fused_kernels ? model::OpPath::fused : model::OpPath::plain);
    dp.attach(params_);
    // the captured step, where the run allows it (train_step.h)
    std::string why = !s.cuda_graph ? "training.cuda_graph is false"
                      : s.accum > 1 ? "gradient accumulation"
                      : dp.world() > 1 ? "data parallel"
                                       : graph_unavailable(g_, device);
    if (why.empty())
      graphed_ = std::make_unique<GradientStep>(g_, params_,
                                                GradientStep::Options{autocast_, s.run.max_grad_norm, true});
    step_note_ = why.empty() ? "each step a CUDA graph replay" : "no CUDA graph: " + why;
  }

  std::string name() const override { return "train"; }
  bool is_main() const override { return dp_.is_main(); }
  bool agrees_on_stop() const override { return dp_.world() > 1; }
  void barrier() override { dp_.barrier(); }

  // The main rank's checkpoint, locally: weights, optimizer moments, EMA (resume() does the rest).
  void restore(const TrainCheckpoint& ck, const std::string& dir) override {
    {
      torch::NoGradGuard ng;
      model::load_weights(*g_, ck.model, dir);
    }
    opt_.load_state(ck.optimizer);
    for (auto& [n, t] : ema_) t.copy_(ck.optimizer.at("ema." + n));
    if (auto* h = g_->fp8_history()) {
      if (ck.optimizer.has(kFp8HistoryKey))
        h->load(ck.optimizer.at(kFp8HistoryKey), dir + ": " + kFp8HistoryKey);
      else
        std::fprintf(stderr, "%s: the checkpoint holds no fp8 amax history: delayed scaling starts anew (its first "
                     "step scales each tensor by its own largest magnitude)\n", dir.c_str());
    }
    // the log window the checkpoint fell into (its row, written after the resume, covers it whole)
    const auto w = ck.state.value("log_window", nlohmann::json::object());
    acc_loss_ = w.value("loss", 0.0), acc_correct_ = w.value("correct", 0.0), acc_tokens_ = w.value("tokens", 0.0);
  }

  // The per-process batch and accumulation may change with the number of processes, so long as the
  // global batch stays (checked in resume()).
  std::set<std::string> resume_checked_keys() const override {
    return {"training.per_gpu_batch_size", "training.gradient_accumulation_steps"};
  }

  // Every rank: the main rank's checkpoint reaches the others through the process group (no
  // shared folder). A resume may change the number of processes when the global batch stays and
  // nothing depends on a process's own random stream (dropout off: the orders and label drops are
  // keyed by global row); otherwise a one-line error naming both numbers.
  int64_t resume(const TrainCheckpoint* ck, const std::string& dir) override {
    const int64_t world = dp_.world();
    // Every rank trains on rank 0's dataset (each node may keep its own copy).
    {
      auto key = [](const nlohmann::json& id) { return data::TokenFile::describe(id); };
      const std::string mine = key(train_.identity()), main = dp_.from_main(mine);
      const bool same = mine == main;
      check(dp_.all_ok(same), same ? std::string("another rank's dataset differs from rank 0's (") + main + ")"
                                   : s_.train_tokens + " (" + mine + ") differs from rank 0's dataset (" + main + ")");
    }
    // A resumed run continues on the data it was trained on: the checkpoint's record against the
    // file given now (its path may change; checkpoints of earlier versions have no record). The
    // validation set may change (dataset.val_tokens steers the run only).
    std::string data_error;
    if (ck && ck->state.contains("train_data")) {
      const auto& saved = ck->state.at("train_data");
      const auto now = train_.identity();
      if (data::TokenFile::describe(saved) != data::TokenFile::describe(now))
        data_error = dir + ": the run was trained on " + saved.value("path", std::string("?")) + " (" +
                     data::TokenFile::describe(saved) + "), " + s_.train_tokens + " is another dataset (" +
                     data::TokenFile::describe(now) + "): resume with the run's own data, or start a new output folder";
    }
    const std::string agreed_error = dp_.from_main(data_error);
    check(agreed_error.empty(), agreed_error);
    // [has, step, data position, world, global batch, optimizer steps, cpu state bytes, cuda state bytes]
    auto head = torch::zeros({8}, torch::kInt64);
    torch::Tensor cpu_states, cuda_states;  // [saved world, bytes] on the main rank
    if (ck) {
      const int64_t saved_world = ck->state.value("world_size", int64_t{1});
      auto states = [&](const std::string& key) -> torch::Tensor {
        const std::string one = "rng." + key;
        std::vector<torch::Tensor> rows;
        for (int64_t r = 0; r < saved_world; ++r) {
          const std::string k = saved_world > 1 ? one + "." + std::to_string(r) : one;
          if (!ck->optimizer.has(k)) {
            check(key == "cuda" || saved_world != world, dir, ": the checkpoint has no '", k,
                  "' (the random stream of rank ", r, "): written by another version, or damaged");
            return {};
          }
          rows.push_back(ck->optimizer.at(k).reshape({-1}));
        }
        return torch::stack(rows);
      };
      cpu_states = states("cpu");
      cuda_states = states("cuda");
      head = torch::tensor({int64_t{1}, ck->state.at("step").get<int64_t>(), ck->state.at("data_position").get<int64_t>(),
                            saved_world, ck->state.value("global_batch", int64_t{0}), opt_.steps(),
                            cpu_states.defined() ? cpu_states.size(1) : int64_t{0},
                            cuda_states.defined() ? cuda_states.size(1) : int64_t{0}},
                           torch::kInt64);
    }
    head = dp_.from_main(head);
    const auto h = head.accessor<int64_t, 1>();
    if (h[0] == 0) return 0;
    const int64_t saved_world = h[3], saved_batch = h[4];
    const std::string where = dir.empty() ? std::string("the main rank's checkpoint") : dir;
    check(saved_batch == global_batch_, where, ": written with a global batch of ", saved_batch,
          " sequences, this run's is ", global_batch_, " (", s_.local_batch, " per process x ", world,
          " processes x ", s_.accum, " accumulation steps): keep the global batch to resume");
    if (saved_world != world)
      check(s_.gen.dropout == 0 && s_.gen.attn_dropout == 0, where, ": written by ", saved_world,
            " processes, resumed with ", world, ": the dropout masks come from each process's own random stream, "
            "so the run cannot continue exactly; resume with ", saved_world, " processes (or train with dropout 0)");
    if (ck) restore(*ck, dir);
    if (world > 1) {  // the main rank's weights, moments, EMA and fp8 history to every rank
      torch::NoGradGuard ng;
      dp_.broadcast(params_);
      dp_.broadcast(opt_.state_tensors());
      std::vector<torch::Tensor> ema;
      for (auto& [n, t] : ema_) ema.push_back(t);
      dp_.broadcast(ema);
      opt_.set_steps(h[5]);
      if (auto* fh = g_->fp8_history()) {
        const bool held = dp_.from_main(torch::tensor({int64_t{fh->holds_step()}}, torch::kInt64)).item<int64_t>() != 0;
        if (held) fh->load(dp_.from_main(fh->state()), "the main rank's fp8 amax history");
      }
    }
    // each rank's own random streams, where the checkpoint has them
    auto share = [&](torch::Tensor t, int64_t bytes) {
      if (bytes == 0) return torch::Tensor();
      if (!t.defined()) t = torch::empty({saved_world, bytes}, torch::kUInt8);
      return dp_.from_main(t);
    };
    cpu_states = share(cpu_states, h[6]);
    cuda_states = share(cuda_states, h[7]);
    const int64_t r = dp_.rank();
    if (r < saved_world && cpu_states.defined()) {
      io::StateDict rng;
      rng.set("rng.cpu", cpu_states[r].clone());
      if (cuda_states.defined()) rng.set("rng.cuda", cuda_states[r].clone());
      load_rng_states(rng, cuda_index_);
    }
    if (saved_world != world && dp_.is_main())
      std::fprintf(stderr, "resumed with %lld processes (checkpoint: %lld): dropout is off, so the run continues exactly\n",
                   (long long)world, (long long)saved_world);
    sampler_.set_position(h[2]);
    return h[1];
  }

  void describe() const override {
    int64_t params = 0;
    for (auto& p : g_->parameters()) params += p.numel();
    const auto& c = s_.gen;
    const std::string fp8 = !s_.fp8 ? ""
                            : s_.fp8_delayed_history > 0
                                ? cat(", fp8 products (delayed scaling, ", s_.fp8_delayed_history, " steps of history)")
                                : std::string(", fp8 products (current scaling)");
    std::fprintf(stderr,
                 "rar train: %.1fM parameters (H=%lld L=%lld), %lld sequences of %lld tokens, V=%lld, C=%lld; global "
                 "batch %lld (%lld x %lld ranks x %lld accumulation); %s%s%s, data parallel: %s\n",
                 params / 1e6, (long long)c.hidden, (long long)c.layers, (long long)train_.info().count,
                 (long long)c.seq_len, (long long)c.codebook, (long long)c.classes, (long long)global_batch_,
                 (long long)s_.local_batch, (long long)dp_.world(), (long long)s_.accum, device_.str().c_str(),
                 autocast_ ? " bf16 autocast" : " fp32", fp8.c_str(), dp_.backend());
    if (device_.is_cuda()) std::fprintf(stderr, "rar train: %s\n", step_note_.c_str());
  }

  StepStats gradients(int64_t step, const std::function<StopFlags()>& local_flags) override {
    r_ = randomness(step, s_.anneal_start, s_.anneal_end);
    // The step's numbers (training/train_step.h StepNumbers), read back once; several processes
    // add their stop flags, so that every rank takes the same decision.
    torch::Tensor packed;
    if (graphed_) {  // one micro-batch on one process: the captured step
      auto [tokens, labels] = train_.batch(torch::tensor(sampler_.next(), torch::kInt64));
      packed = graphed_->run(tokens, labels,
                             draw_objective(global_batch_, 0, s_.local_batch, scan_, r_, s_.label_dropout, s_.run.seed, step));
    } else {
      opt_.zero_grad();
      const auto f32 = torch::TensorOptions(torch::kFloat32).device(device_);
      torch::Tensor loss_sum = torch::zeros({}, f32), correct_sum = torch::zeros({}, f32.dtype(torch::kInt64));
      for (int64_t micro = 0; micro < s_.accum; ++micro) {
        if (micro == s_.accum - 1) dp_.arm();  // this backward's gradients are final: stream them out
        auto [tokens, labels] = train_.batch(torch::tensor(sampler_.next(), torch::kInt64));
        auto d = draw_objective(global_batch_, micro * micro_global_ + dp_.rank() * s_.local_batch, s_.local_batch,
                                scan_, r_, s_.label_dropout, s_.run.seed, step);
        auto la = forward_backward(g_, tokens.to(device_, /*non_blocking=*/true),
                                   labels.to(device_, /*non_blocking=*/true), d, autocast_,
                                   1.0 / static_cast<double>(s_.accum));
        loss_sum += la.loss.detach();
        correct_sum += la.correct;
      }
      dp_.finish();
      if (!announced_buckets_ && dp_.world() > 1 && dp_.is_main())
        std::fprintf(stderr, "gradient buckets: %lld, %lld all-reduced while backward was still running\n",
                     (long long)dp_.buckets(), (long long)dp_.overlapped());
      announced_buckets_ = true;
      packed = StepNumbers::pack(loss_sum / static_cast<double>(s_.accum), correct_sum,
                                 clip_grad_norm_(params_, s_.run.max_grad_norm));
    }
    // delayed fp8 scaling: the step's records, every rank's max, become the history's newest step
    if (auto* h = g_->fp8_history()) {
      if (dp_.world() > 1) {
        auto records = h->records();
        dp_.max_(records);
      }
      h->advance();
    }
    if (dp_.world() > 1) {
      const StopFlags mine = local_flags();
      packed = StepNumbers::with_flags(packed, mine.interrupt, mine.out_of_time);
      dp_.sum_(packed);
    }
    const StepNumbers n = StepNumbers::read(packed, dp_.world());
    StepStats st;
    st.loss = n.loss;
    st.grad_norm = n.grad_norm;
    if (dp_.world() > 1) st.agreed = StopFlags{n.interrupt, n.out_of_time};
    acc_loss_ += st.loss;
    acc_correct_ += n.correct;
    acc_tokens_ += static_cast<double>(global_batch_ * s_.gen.seq_len);
    grad_norm_ = st.grad_norm;
    return st;
  }

  void update(int64_t step) override {
    lr_ = s_.run.lr.at(step);
    opt_.step(lr_);
    if (s_.use_ema) {
      torch::NoGradGuard ng;
      size_t i = 0;
      for (auto& p : params_) ema_[i++].second.lerp_(p.detach(), 1 - s_.ema_decay);
    }
  }

  LogLine log_window(int64_t, const LogWindow& w) override {
    const double seq_s = w.steps * global_batch_ / std::max(w.seconds, 1e-9);
    LogLine line;
    line.row = {{"loss", acc_loss_ / w.steps}, {"accuracy", acc_correct_ / acc_tokens_}, {"lr", lr_},
                {"randomness", r_},           {"grad_norm", grad_norm_},                {"sequences_per_s", seq_s},
                {"tokens_per_s", seq_s * s_.gen.seq_len}};
    char extra[200];
    std::snprintf(extra, sizeof extra, "loss %.4f  acc %.3f  lr %.2e  r %.2f  %.0f tok/s", acc_loss_ / w.steps,
                  acc_correct_ / acc_tokens_, lr_, r_, seq_s * s_.gen.seq_len);
    line.progress = extra;
    acc_loss_ = acc_correct_ = acc_tokens_ = 0;
    return line;
  }

  io::StateDict weights() const override {
    io::StateDict sd;
    for (const auto& item : g_->named_parameters()) sd.set(item.key(), item.value().detach());
    return sd;
  }

  // Every rank's RNG state goes into the checkpoint (rng.cpu.<rank> when world > 1), gathered
  // through the process group: the ranks need no shared folder.
  TrainCheckpoint checkpoint(int64_t) override {
    io::StateDict rng;
    save_rng_states(rng, cuda_index_);
    io::StateDict all;
    if (dp_.world() > 1) {
      for (const std::string key : {"rng.cpu", "rng.cuda"}) {
        if (!rng.has(key)) continue;
        const auto every = dp_.all_gather(rng.at(key));
        for (int64_t r = 0; r < dp_.world(); ++r) all.set(key + "." + std::to_string(r), every[r].clone());
      }
    } else {
      all = rng;
    }
    TrainCheckpoint ck;
    if (!dp_.is_main()) return ck;
    ck.model = model::state_dict_of(*g_);
    ck.model.metadata[model::kGeneratorConfigKey] = s_.gen.to_json().dump();
    ck.optimizer = opt_.state();
    for (auto& [n, t] : ema_) ck.optimizer.set("ema." + n, t.cpu());
    for (const auto& n : all.names()) ck.optimizer.set(n, all.at(n));
    if (auto* h = g_->fp8_history(); h && h->holds_step()) ck.optimizer.set(kFp8HistoryKey, h->state());
    ck.state = {{"data_position", sampler_.position()}, {"kind", "rar"}, {"world_size", dp_.world()},
                {"global_batch", global_batch_}, {"train_data", train_.identity()},
                {"val_data", val_ ? val_->identity() : nlohmann::json(nullptr)},
                {"log_window", {{"loss", acc_loss_}, {"correct", acc_correct_}, {"tokens", acc_tokens_}}}};
    return ck;
  }

  // How the run's generator is meant to be sampled: its config's guidance settings (rar.yaml's
  // guidance_scale, guidance_scale_pow, randomize_temperature), so `rar sample` uses them.
  model::SamplingDefaults sampling() const {
    model::SamplingDefaults d;
    d.cfg = s_.guidance, d.cfg_power = s_.guidance_power, d.temperature = s_.temperature;
    return d;
  }

  void export_weights() override {
    model::save_generator(join_path(s_.run.output_dir, "generator.safetensors"), g_, sampling());
    if (s_.use_ema) {
      io::StateDict e;
      for (auto& [n, t] : ema_) e.set(n, t.cpu());
      e.metadata[model::kGeneratorConfigKey] = s_.gen.to_json().dump();
      e.metadata[model::kSamplingKey] = sampling().to_json().dump();
      e.metadata["format"] = "pt";
      io::write_safetensors(join_path(s_.run.output_dir, "generator_ema.safetensors"), e);
    }
  }

  // Validation NLL in raster order on the first eval_examples sequences of dataset.val_tokens.
  nlohmann::json evaluate(int64_t step, bool) override {
    if (!val_) return nullptr;
    torch::NoGradGuard ng;
    g_->eval();
    int64_t n = val_->info().count;
    if (s_.eval_examples > 0) n = std::min(n, s_.eval_examples);
    auto [tokens, labels] = val_->batch(torch::arange(n, torch::kInt64));
    torch::Tensor nll;
    {
      Autocast ac(autocast_, device_.type(), torch::kBFloat16);
      nll = eval::sequence_nll(g_, tokens, labels, {}, false, s_.local_batch);
    }
    g_->train();
    const double v = nll.mean().item<double>();
    std::fprintf(stderr, "\nvalidation step %lld: NLL %.4f nats/token (raster, %lld sequences)\n", (long long)step, v,
                 (long long)n);
    return {{"val/nll", v}, {"val/sequences", n}};
  }

  // A grid of 8 samples for each of the first (up to) 10 classes, with the config's guidance.
  std::vector<std::pair<std::string, std::string>> generate(int64_t step) override {
    if (!tokenizer_) return {};
    torch::NoGradGuard ng;
    g_->eval();
    sampling::SamplingOptions so;
    so.cfg = s_.guidance;
    so.cfg_power = s_.guidance_power;
    so.temperature = s_.temperature;
    so.seed = s_.run.seed;
    const int64_t classes = std::min<int64_t>(s_.gen.classes, 10), per = 8;
    auto cls = sampling::class_list({}, true, per, classes);
    torch::Tensor tokens;
    {
      Autocast ac(autocast_, device_.type(), torch::kBFloat16);
      sampling::Sampler sampler(g_, so);
      tokens = sampler.sample(cls.to(device_), 80);
    }
    auto images = tokenizer_->model->decode(tokens.to(device_)).cpu();
    g_->train();
    char name[48];
    std::snprintf(name, sizeof name, "samples-%08lld.png", (long long)step);
    const std::string path = join_path(s_.run.output_dir, name);
    io::write_image(path, io::make_grid(images, per));
    return {{"samples", path}};
  }

  void finish(int64_t, double) override {
    std::fprintf(stderr, "generator: %s\n", join_path(s_.run.output_dir, "generator.safetensors").c_str());
  }

 private:
  const RarSettings& s_;
  DataParallel& dp_;
  const torch::Device device_;
  const bool autocast_;
  const int cuda_index_;
  const data::TokenFile& train_;
  const data::TokenFile* val_;
  model::Generator g_;
  AdamW opt_;
  const std::vector<int64_t> scan_;
  const int64_t micro_global_, global_batch_;
  data::EpochSampler sampler_;
  const std::vector<torch::Tensor> params_;
  std::vector<std::pair<std::string, torch::Tensor>> ema_;  // fp32 copies
  std::unique_ptr<model::LoadedVQ> tokenizer_;
  std::unique_ptr<GradientStep> graphed_;  // the captured step, where the run allows one
  std::string step_note_;
  bool announced_buckets_ = false;
  // the step's and the log window's numbers
  double r_ = 0, lr_ = 0, grad_norm_ = 0, acc_loss_ = 0, acc_correct_ = 0, acc_tokens_ = 0;
};

}  // namespace

void train_rar(const Config& cfg, const RunControl& control) {
  RarSettings s = RarSettings::from(cfg);
  // processes and device
  const DistEnv env = dist_env_from_environment();
  const torch::Device device = rank_device(parse_device(s.run.device), env);
  parse_precision(s.run.tf32 ? "tf32" : "fp32");
  DataParallel dp(env, device, s.ddp_bucket_mb, s.ddp_bf16 ? torch::kBFloat16 : torch::kFloat32, s.ddp_exact);
  const OutputLock lock = prepare_run_folder(s.run, control.resume, dp.is_main());

  // data; the published config's .jsonl becomes a .rartok beside it, once (the ranks one after the
  // other: on a shared folder the first converts and the others reuse it, on separate disks each
  // node's first process converts)
  if (!s.pretokenized.empty()) {
    for (int64_t r = 0; r < dp.world(); ++r) {
      if (r == dp.rank())
        s.train_tokens = data::rartok_for_jsonl(s.pretokenized, s.gen.codebook, s.gen.classes, s.gen.seq_len);
      dp.barrier();
    }
  }
  data::TokenFile train(s.train_tokens);
  train.expect(s.gen.codebook, s.gen.seq_len);
  check(train.info().classes <= s.gen.classes, s.train_tokens, ": ", train.info().classes,
        " classes, but model.generator.condition_num_classes is ", s.gen.classes);
  std::unique_ptr<data::TokenFile> val;
  if (!s.val_tokens.empty()) {
    val = std::make_unique<data::TokenFile>(s.val_tokens);
    val->expect(s.gen.codebook, s.gen.seq_len);
  }

  RarJob job(s, cfg, dp, device, train, val.get());
  run_training(s.run, cfg, job, control);
}

}  // namespace rar::training
