// tokenizer_trainer.cpp — see tokenizer_trainer.h.
#include "training/tokenizer_trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "data/epoch_sampler.h"
#include "data/sources.h"
#include "io/image.h"
#include "io/metrics_log.h"
#include "model/weights.h"
#include "training/adamw.h"
#include "training/optim_config.h"
#include "training/checkpoints.h"
#include "training/run_support.h"
#include "training/schedule.h"
#include "training/training_run.h"
#include "training/vq_objective.h"
#include "util/atomic_file.h"
#include "util/device.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::training {

namespace F = torch::nn::functional;

const char* tokenizer_defaults_yaml() {
  return R"(# rar train-tokenizer defaults (sized for 32x32 images -> 8x8 tokens)
model:
  vq_model:
    codebook_size: 512
    token_size: 32            # code dimension (z channels)
    num_channels: 0           # image channels; 0 = as the data
    hidden_channels: 64
    channel_mult: [1, 2, 2]   # one 2x downsampling per level after the first
    num_res_blocks: 2
    norm_groups: 32
    dropout: 0.0
    use_l2_norm: true
losses:
  reconstruction: l1+l2       # l1 | l2 | l1+l2
  reconstruction_weight: 1.0
  codebook_weight: 1.0
  commitment_cost: 0.25
  dead_code_threshold: 0.03   # restart a code whose usage share is below this / codebook_size
  dead_code_every: 100        # steps between restart checks (0 = never)
  usage_decay: 0.99           # EMA decay of the usage shares
data:
  train: fashion-mnist:train
  test: auto                  # auto: the :test split of fashion-mnist/mnist, else none; none: no evaluation
  size: 0                     # ADM center crop size (0 = images as they are)
  pad: 32                     # zero-pad to this square size (0 = none)
  flip: false                 # random horizontal flips
  cache_mb: 4096              # keep prepared images in memory up to this size
optimizer:
  name: adamw
  params:
    learning_rate: 1e-3
    beta1: 0.9
    beta2: 0.99
    weight_decay: 1e-4
lr_scheduler:
  scheduler: cosine
  params:
    learning_rate: ${optimizer.params.learning_rate}
    warmup_steps: 200
    end_lr: 1e-5
training:
  per_gpu_batch_size: 128
  max_train_steps: 6000
  max_minutes: 0              # stop (checkpoint + evaluation) after this wall time; 0 = no limit
  max_grad_norm: 1.0
  mixed_precision: "no"       # no | bf16 (CUDA autocast)
  enable_tf32: true
  seed: 42
  device: auto
experiment:
  output_dir: runs/tokenizer
  log_every: 50
  tensorboard: true           # TensorBoard event files in <output_dir>/tensorboard
  eval_every: 2000
  generate_every: 1000        # reconstruction grid of test images
  save_every: 1000
  keep_last: 2
  eval_images: 0              # test images per evaluation (0 = all)
)";
}

ReconstructionStats evaluate_reconstruction(model::VQModel& vq, const data::ImageBatches& images, int64_t n,
                                            int64_t batch, const torch::Device& device) {
  torch::NoGradGuard ng;
  const bool was_training = vq->is_training();
  vq->eval();
  if (n <= 0 || n > images.size()) n = images.size();
  const int64_t K = vq->cfg.codebook_size;
  auto hist = torch::zeros({K}, torch::kInt64);
  double psnr_sum = 0;
  for (int64_t i = 0; i < n; i += batch) {
    const int64_t m = std::min(batch, n - i);
    auto x = images.range(i, m).to(device).to(torch::kFloat32).div_(255.0);
    auto codes = vq->encode(x);
    auto recon = vq->decode(codes);
    auto mse = (recon - x).pow(2).flatten(1).mean(1).clamp_min(1e-10);
    psnr_sum += (-10.0 * torch::log10(mse)).sum().item<double>();
    hist += torch::bincount(codes.flatten().cpu(), {}, K);
  }
  vq->train(was_training);
  ReconstructionStats s;
  s.images = n;
  s.psnr = psnr_sum / static_cast<double>(n);
  s.codes_used = (hist > 0).sum().item<double>() / static_cast<double>(K);
  auto p = hist.to(torch::kFloat64) / hist.sum().to(torch::kFloat64);
  s.perplexity = std::exp(-(p * torch::log(p.clamp_min(1e-30))).sum().item<double>());
  return s;
}

namespace {

model::VQConfig vq_config_of(const Config& c, int64_t data_channels) {
  model::VQConfig v;
  const std::string p = "model.vq_model.";
  v.codebook_size = c.get_int(p + "codebook_size");
  v.z_channels = c.get_int(p + "token_size");
  v.image_channels = c.get_int(p + "num_channels");
  if (v.image_channels == 0) v.image_channels = data_channels;
  v.base_channels = c.get_int(p + "hidden_channels");
  v.channel_mult = c.get_int_list(p + "channel_mult");
  v.res_blocks = c.get_int(p + "num_res_blocks");
  v.norm_groups = c.get_int(p + "norm_groups");
  v.dropout = c.get_double(p + "dropout");
  v.use_l2_norm = c.get_bool(p + "use_l2_norm");
  v.validate();
  return v;
}

// Originals (top half) over their reconstructions (bottom half) of the first `n` images.
void write_recon_grid(const std::string& path, model::VQModel& vq, const data::ImageBatches& images, int64_t n,
                      const torch::Device& device) {
  torch::NoGradGuard ng;
  const bool was_training = vq->is_training();
  vq->eval();
  n = std::min(n, images.size());
  auto x = images.range(0, n).to(device).to(torch::kFloat32).div_(255.0);
  auto recon = vq->decode(vq->encode(x));
  vq->train(was_training);
  io::write_image(path, io::make_grid(torch::cat({x, recon}).cpu(), 8));
}

// The run's settings, read once.
struct TokenizerSettings {
  RunSettings run;
  std::string train_data, test_data;  // data.train, data.test resolved ("" = no evaluation)
  int64_t size = 0, pad = 0, cache_bytes = 0, batch = 0, eval_images = 0;
  bool flip = false;
  VqLossWeights loss;
  double dead_threshold = 0, usage_decay = 0;
  int64_t dead_every = 0;

  static TokenizerSettings from(const Config& c) {
    TokenizerSettings s;
    s.run = RunSettings::from(c);
    s.train_data = c.get_string("data.train");
    s.test_data = data::resolve_test_split(c.get_string("data.test"), s.train_data);
    s.size = c.get_int("data.size");
    s.pad = c.get_int("data.pad");
    s.cache_bytes = c.get_int("data.cache_mb") * (int64_t(1) << 20);
    s.flip = c.get_bool("data.flip");
    s.batch = c.get_int("training.per_gpu_batch_size");
    check(s.batch > 0, "training.per_gpu_batch_size must be positive, got ", s.batch);
    s.eval_images = c.get_int("experiment.eval_images");
    s.loss.reconstruction = c.get_string("losses.reconstruction");
    s.loss.reconstruction_weight = c.get_double("losses.reconstruction_weight");
    s.loss.codebook_weight = c.get_double("losses.codebook_weight");
    s.loss.commitment = c.get_double("losses.commitment_cost");
    s.loss.validate();
    s.dead_threshold = c.get_double("losses.dead_code_threshold");
    s.usage_decay = c.get_double("losses.usage_decay");
    s.dead_every = c.get_int("losses.dead_code_every");
    return s;
  }
};

model::VQModel on_device(model::VQModel vq, const torch::Device& device) {
  vq->to(device);
  vq->train();
  return vq;
}

// The tokenizer's pieces of the run (training/training_run.h).
class TokenizerJob final : public TrainingJob {
 public:
  TokenizerJob(const TokenizerSettings& s, const model::VQConfig& vcfg, const Config& cfg,
               const data::ImageBatches& train, const data::ImageBatches* test, torch::Device device)
      : s_(s), vcfg_(vcfg), train_(train), test_(test), device_(device),
        autocast_(s.run.bf16 && device.is_cuda()), cuda_index_(device.is_cuda() ? std::max<int>(0, device.index()) : -1),
        vq_(on_device(model::VQModel(vcfg), device)), opt_(named_parameters(*vq_), adamw_options(cfg)),
        sampler_(train.size(), s.batch, s.run.seed), usage_(vcfg.codebook_size, s.usage_decay, device) {
    const auto f64 = torch::TensorOptions(torch::kFloat64).device(device);
    acc_rec_ = torch::zeros({}, f64);
    acc_psnr_ = torch::zeros({}, f64);
    window_hist_ = torch::zeros({vcfg.codebook_size}, torch::TensorOptions(torch::kInt64).device(device));
  }

  std::string name() const override { return "train-tokenizer"; }

  void restore(const TrainCheckpoint& ck, const std::string& dir) override {
    {
      torch::NoGradGuard ng;
      model::load_weights(*vq_, ck.model, dir);
    }
    opt_.load_state(ck.optimizer);
    usage_.shares().copy_(ck.optimizer.at("vq.usage"));
    load_rng_states(ck.optimizer, cuda_index_);
    sampler_.set_position(ck.state.at("data_position").get<int64_t>());
    restarted_total_ = ck.state.value("codes_restarted", int64_t(0));
    // the log window the checkpoint fell into (its row, written after the resume, covers it whole)
    const auto w = ck.state.value("log_window", nlohmann::json::object());
    acc_loss_ = w.value("loss", 0.0), acc_n_ = w.value("n", int64_t{0});
    acc_rec_.fill_(w.value("rec", 0.0)), acc_psnr_.fill_(w.value("psnr", 0.0));
    if (ck.optimizer.has("log.window_codes")) window_hist_.copy_(ck.optimizer.at("log.window_codes"));
    // the codebook starts on the first step's encoder outputs: a checkpoint at step 0 (a run out
    // of time before its first step) has not done that yet
    codebook_initialised_ = ck.state.at("step").get<int64_t>() > 0;
  }

  void describe() const override {
    int64_t params = 0;
    for (auto& p : vq_->parameters()) params += p.numel();
    const auto chw = train_.shape();
    const int64_t f = vcfg_.downsample_factor();
    std::fprintf(stderr,
                 "tokenizer: %lld parameters, %lldx%lld images x%lld ch -> %lldx%lld tokens, K=%lld, code dim %lld%s; "
                 "%lld train images%s; %s%s\n",
                 (long long)params, (long long)chw[1], (long long)chw[2], (long long)chw[0], (long long)(chw[1] / f),
                 (long long)(chw[2] / f), (long long)vcfg_.codebook_size, (long long)vcfg_.z_channels,
                 vcfg_.use_l2_norm ? " (l2-normalised)" : "", (long long)train_.size(),
                 test_ ? (", " + std::to_string(test_->size()) + " test").c_str() : "", device_.str().c_str(),
                 autocast_ ? " bf16 autocast" : "");
  }

  StepStats gradients(int64_t step, const std::function<StopFlags()>&) override {
    auto x = train_.get(sampler_.next()).to(device_, /*non_blocking=*/true).to(torch::kFloat32).div_(255.0);
    if (s_.flip) {
      auto g = at::make_generator<at::CPUGeneratorImpl>(s_.run.seed * 1000003ULL + static_cast<uint64_t>(step));
      auto m = torch::rand({x.size(0)}, g).lt(0.5).to(device_).view({-1, 1, 1, 1});
      x = torch::where(m, x.flip({3}), x);
    }
    z_ = vq_encode(vq_, x, autocast_);
    if (!codebook_initialised_) {  // start the codebook on encoder outputs of the first batch
      init_codebook(vq_, z_.z_flat);
      codebook_initialised_ = true;
    }
    loss_ = vq_loss(vq_, z_, x, s_.loss, autocast_);
    opt_.zero_grad();
    loss_.loss.backward();
    StepStats st;
    st.grad_norm = clip_grad_norm(vq_->parameters(), s_.run.max_grad_norm);
    st.loss = loss_.loss.item<double>();
    grad_norm_of_last_ = st.grad_norm;
    acc_loss_ += st.loss;
    return st;
  }

  void update(int64_t step) override {
    lr_ = s_.run.lr.at(step);
    opt_.step(lr_);
    // code usage: EMA of shares, window histogram, dead-code restarts
    window_hist_ += usage_.add(loss_.codes);
    if (s_.dead_every > 0 && (step + 1) % s_.dead_every == 0)
      restarted_total_ += usage_.restart_dead(vq_, opt_, z_.z_flat, s_.dead_threshold);
    acc_rec_ += loss_.reconstruction.detach().to(torch::kFloat64);
    acc_psnr_ += -10.0 * torch::log10(loss_.mse.detach().to(torch::kFloat64).clamp_min(1e-10));
    ++acc_n_;
  }

  LogLine log_window(int64_t, const LogWindow& w) override {
    const double K = static_cast<double>(vcfg_.codebook_size);
    const double used = (window_hist_ > 0).sum().item<double>() / K;
    const double ips = static_cast<double>(w.steps * s_.batch) / std::max(1e-9, w.seconds);
    const double psnr = acc_psnr_.item<double>() / acc_n_;
    LogLine line;
    line.row = {{"loss", acc_loss_ / acc_n_},
                {"rec_loss", acc_rec_.item<double>() / acc_n_},
                {"psnr", psnr},
                {"codebook_loss", loss_.codebook.item<double>()},
                {"commit_loss", loss_.commitment.item<double>()},
                {"lr", lr_},
                {"grad_norm", grad_norm_of_last_},
                {"codes_used", used},
                {"codes_restarted", restarted_total_},
                {"images_per_s", ips}};
    char extra[160];
    std::snprintf(extra, sizeof extra, "loss %.4f  psnr %.2f  codes %.0f%%  lr %.2e  %.0f img/s", acc_loss_ / acc_n_,
                  psnr, 100 * used, lr_, ips);
    line.progress = extra;
    acc_loss_ = 0;
    acc_rec_.zero_();
    acc_psnr_.zero_();
    acc_n_ = 0;
    window_hist_.zero_();
    return line;
  }

  io::StateDict weights() const override { return model::state_dict_of(*vq_); }

  TrainCheckpoint checkpoint(int64_t) override {
    TrainCheckpoint ck;
    ck.model = model::state_dict_of(*vq_);
    ck.model.metadata[model::kVQConfigKey] = vcfg_.to_json().dump();
    ck.optimizer = opt_.state();
    ck.optimizer.set("vq.usage", usage_.shares().cpu());
    save_rng_states(ck.optimizer, cuda_index_);
    ck.optimizer.set("log.window_codes", window_hist_.cpu());
    ck.state = {{"data_position", sampler_.position()}, {"codes_restarted", restarted_total_}, {"kind", "tokenizer"},
                {"log_window", {{"loss", acc_loss_}, {"n", acc_n_}, {"rec", acc_rec_.item<double>()},
                                {"psnr", acc_psnr_.item<double>()}}}};
    return ck;
  }

  void export_weights() override { model::save_vq(join_path(s_.run.output_dir, "tokenizer.safetensors"), vq_); }

  // Periodic evaluations on eval_images test images, the final one on all of them.
  nlohmann::json evaluate(int64_t step, bool final) override {
    if (!test_) return nullptr;
    const auto r = evaluate_reconstruction(vq_, *test_, final ? 0 : s_.eval_images, 256, device_);
    if (final) final_ = r;
    else
      std::fprintf(stderr, "eval step %lld: PSNR %.2f dB, codes used %.1f%%, perplexity %.1f (%lld test images)\n",
                   (long long)step, r.psnr, 100 * r.codes_used, r.perplexity, (long long)r.images);
    return {{"eval/psnr", r.psnr}, {"eval/codes_used", r.codes_used}, {"eval/perplexity", r.perplexity},
            {"eval/images", r.images}};
  }

  std::vector<std::pair<std::string, std::string>> generate(int64_t step) override {
    char name[48];
    std::snprintf(name, sizeof name, "recon-%08lld.png", (long long)step);
    const std::string path = join_path(s_.run.output_dir, name);
    write_recon_grid(path, vq_, test_ ? *test_ : train_, 32, device_);
    return {{"reconstructions", path}};
  }

  void finish(int64_t step, double minutes) override {
    if (final_.images > 0) {
      const auto& r = final_;
      nlohmann::json summary = {{"step", step},           {"test_psnr_db", r.psnr},    {"codes_used", r.codes_used},
                                {"perplexity", r.perplexity}, {"test_images", r.images}, {"minutes", minutes},
                                {"device", device_.str()}};
      write_file_atomic(join_path(s_.run.output_dir, "eval.json"), summary.dump(2) + "\n");
      const int64_t K = vcfg_.codebook_size;
      std::printf("test PSNR %.2f dB, codes used %.1f%% (%lld of %lld), perplexity %.1f, %lld test images, %.1f min\n",
                  r.psnr, 100 * r.codes_used, (long long)std::llround(r.codes_used * K), (long long)K, r.perplexity,
                  (long long)r.images, minutes);
    }
    std::fprintf(stderr, "tokenizer: %s\n", join_path(s_.run.output_dir, "tokenizer.safetensors").c_str());
  }

 private:
  const TokenizerSettings& s_;
  const model::VQConfig vcfg_;
  const data::ImageBatches& train_;
  const data::ImageBatches* test_;
  const torch::Device device_;
  const bool autocast_;
  const int cuda_index_;
  model::VQModel vq_;
  AdamW opt_;
  data::EpochSampler sampler_;
  CodeUsage usage_;
  bool codebook_initialised_ = false;
  int64_t restarted_total_ = 0;
  // this step's encoder outputs and loss (update() and log_window() read them)
  Encoded z_;
  VqLoss loss_;
  double lr_ = 0, grad_norm_of_last_ = 0;
  ReconstructionStats final_;
  // the log window's sums, on the device (read once per log line)
  double acc_loss_ = 0;
  torch::Tensor acc_rec_, acc_psnr_, window_hist_;
  int64_t acc_n_ = 0;
};

}  // namespace

void train_tokenizer(const Config& cfg, const RunControl& control) {
  const TokenizerSettings s = TokenizerSettings::from(cfg);
  const OutputLock lock = prepare_run_folder(s.run, control.resume);
  parse_precision(s.run.tf32 ? "tf32" : "fp32");
  const torch::Device device = parse_device(s.run.device);

  // data: the tokenizer's channels follow the data unless the config sets them
  auto train_src = data::open_source(s.train_data);
  const int64_t data_channels = data::prepare(train_src->image(0), s.size, train_src->image(0).size(2), s.pad).size(2);
  const model::VQConfig vcfg = vq_config_of(cfg, data_channels);
  data::ImageBatches train(*train_src, s.size, vcfg.image_channels, s.pad, s.cache_bytes, "load train");
  const auto chw = train.shape();
  const int64_t f = vcfg.downsample_factor();
  check(chw[1] % f == 0 && chw[2] % f == 0, "images are ", chw[1], "x", chw[2], " after preparation, not a multiple of ",
        f, " (the tokenizer's downsampling, from channel_mult): set data.pad or data.size");
  std::unique_ptr<data::ImageSource> test_src;
  std::unique_ptr<data::ImageBatches> test;
  if (!s.test_data.empty()) {
    test_src = data::open_source(s.test_data);
    test = std::make_unique<data::ImageBatches>(*test_src, s.size, vcfg.image_channels, s.pad, s.cache_bytes, "load test");
  }

  torch::manual_seed(s.run.seed);
  TokenizerJob job(s, vcfg, cfg, train, test.get(), device);
  run_training(s.run, cfg, job, control);
}

}  // namespace rar::training
