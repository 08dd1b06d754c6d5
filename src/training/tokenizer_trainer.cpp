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

}  // namespace

void train_tokenizer(const Config& cfg, bool resume, int64_t stop_after) {
  using clock = std::chrono::steady_clock;
  const std::string out = cfg.get_string("experiment.output_dir");
  check(!out.empty(), "experiment.output_dir is empty");
  make_dirs(out);
  const std::string ckpt_root = join_path(out, "checkpoints");

  // ---------------------------------------------------------------- device and precision
  const std::string mp = cfg.get_string("training.mixed_precision");
  check(mp == "no" || mp == "fp32" || mp == "bf16", "training.mixed_precision: expected no or bf16, got '", mp, "'");
  parse_precision(cfg.get_bool("training.enable_tf32") ? "tf32" : "fp32");
  const torch::Device device = parse_device(cfg.get_string("training.device"));
  const bool autocast = mp == "bf16" && device.is_cuda();
  const int cuda_index = device.is_cuda() ? std::max<int>(0, device.index()) : -1;

  // ---------------------------------------------------------------- data
  const std::string train_spec = cfg.get_string("data.train");
  auto train_src = data::open_source(train_spec);
  const int64_t size = cfg.get_int("data.size"), pad = cfg.get_int("data.pad");
  const int64_t cache = cfg.get_int("data.cache_mb") * (int64_t(1) << 20);
  const int64_t data_channels = data::prepare(train_src->image(0), size, train_src->image(0).size(2), pad).size(2);
  const model::VQConfig vcfg = vq_config_of(cfg, data_channels);
  data::ImageBatches train(*train_src, size, vcfg.image_channels, pad, cache, "load train");
  const auto chw = train.shape();
  const int64_t f = vcfg.downsample_factor();
  check(chw[1] % f == 0 && chw[2] % f == 0, "images are ", chw[1], "x", chw[2], " after preparation, not a multiple of ",
        f, " (the tokenizer's downsampling, from channel_mult): set data.pad or data.size");
  std::unique_ptr<data::ImageSource> test_src;
  std::unique_ptr<data::ImageBatches> test;
  const std::string tspec = data::resolve_test_split(cfg.get_string("data.test"), train_spec);
  if (!tspec.empty()) {
    test_src = data::open_source(tspec);
    test = std::make_unique<data::ImageBatches>(*test_src, size, vcfg.image_channels, pad, cache, "load test");
  }
  const data::ImageBatches& shown = test ? *test : train;

  // ---------------------------------------------------------------- model, optimizer, schedule
  const uint64_t seed = static_cast<uint64_t>(cfg.get_int("training.seed"));
  torch::manual_seed(seed);
  model::VQModel vq(vcfg);
  vq->to(device);
  vq->train();
  AdamW opt(named_parameters(*vq), adamw_options(cfg));
  const LrSchedule sched = lr_schedule(cfg);
  const int64_t batch = cfg.get_int("training.per_gpu_batch_size");
  check(batch > 0 && sched.total_steps > 0, "training.per_gpu_batch_size and training.max_train_steps must be positive");
  data::EpochSampler sampler(train.size(), batch, seed);

  const std::string rec_kind = cfg.get_string("losses.reconstruction");
  check(rec_kind == "l1" || rec_kind == "l2" || rec_kind == "l1+l2", "losses.reconstruction: expected l1, l2 or l1+l2, got '",
        rec_kind, "'");
  const double w_rec = cfg.get_double("losses.reconstruction_weight"), w_cb = cfg.get_double("losses.codebook_weight"),
               beta = cfg.get_double("losses.commitment_cost");
  const double dead_threshold = cfg.get_double("losses.dead_code_threshold"),
               usage_decay = cfg.get_double("losses.usage_decay");
  const int64_t dead_every = cfg.get_int("losses.dead_code_every");
  const int64_t K = vcfg.codebook_size;
  auto usage = torch::full({K}, 1.0 / static_cast<double>(K), torch::TensorOptions(torch::kFloat32).device(device));
  int64_t restarted_total = 0;

  // ---------------------------------------------------------------- resume
  int64_t step = 0;
  bool codebook_initialised = false;
  remove_stale_temp_files(out);  // left by a run killed mid-write
  remove_stale_temp_files(ckpt_root);
  check_fresh_output(ckpt_root, resume);
  const std::string latest = resume ? latest_checkpoint(ckpt_root) : "";
  if (resume && latest.empty()) std::fprintf(stderr, "no checkpoint in %s: starting from scratch\n", ckpt_root.c_str());
  if (!latest.empty()) {
    check_resume_config(latest, cfg);
    auto ck = load_checkpoint(latest);
    {
      torch::NoGradGuard ng;
      model::load_weights(*vq, ck.model, "tokenizer");
    }
    opt.load_state(ck.optimizer);
    usage.copy_(ck.optimizer.at("vq.usage"));
    load_rng_states(ck.optimizer, cuda_index);
    step = ck.state.at("step").get<int64_t>();
    sampler.set_position(ck.state.at("data_position").get<int64_t>());
    restarted_total = ck.state.value("codes_restarted", int64_t(0));
    codebook_initialised = true;
    io::truncate_metrics(join_path(out, "metrics.jsonl"), step);  // rows after the checkpoint come again
    std::fprintf(stderr, "resumed from %s (step %lld)\n", latest.c_str(), (long long)step);
  }
  const std::string config_yaml = cfg.to_yaml();
  write_file_atomic(join_path(out, "config.yaml"), config_yaml);

  auto save = [&](int64_t at_step) {
    TrainCheckpoint ck;
    ck.model = model::state_dict_of(*vq);
    check_finite_weights(ck.model, at_step);
    ck.model.metadata[model::kVQConfigKey] = vcfg.to_json().dump();
    ck.optimizer = opt.state();
    ck.optimizer.set("vq.usage", usage.cpu());
    save_rng_states(ck.optimizer, cuda_index);
    ck.state = {{"data_position", sampler.position()}, {"codes_restarted", restarted_total}, {"kind", "tokenizer"}};
    ck.config_yaml = config_yaml;
    // The checkpoint first: the exported weights never get ahead of what --resume can restore.
    const std::string where = save_checkpoint(ckpt_root, at_step, ck, cfg.get_int("experiment.keep_last"));
    model::save_vq(join_path(out, "tokenizer.safetensors"), vq);
    return where;
  };

  MetricsLog metrics(join_path(out, "metrics.jsonl"), !latest.empty());
  const int64_t log_every = std::max<int64_t>(1, cfg.get_int("experiment.log_every"));
  const int64_t eval_every = cfg.get_int("experiment.eval_every"), grid_every = cfg.get_int("experiment.generate_every"),
                save_every = cfg.get_int("experiment.save_every"), eval_images = cfg.get_int("experiment.eval_images");
  const double max_minutes = cfg.get_double("training.max_minutes");
  const double max_grad_norm = cfg.get_double("training.max_grad_norm");
  const bool flip = cfg.get_bool("data.flip");

  auto run_eval = [&](int64_t at_step) {
    if (!test) return;
    auto s = evaluate_reconstruction(vq, *test, eval_images, 256, device);
    metrics.write({{"step", at_step},
                   {"eval/psnr", s.psnr},
                   {"eval/codes_used", s.codes_used},
                   {"eval/perplexity", s.perplexity},
                   {"eval/images", s.images}});
    std::fprintf(stderr, "eval step %lld: PSNR %.2f dB, codes used %.1f%%, perplexity %.1f (%lld test images)\n",
                 (long long)at_step, s.psnr, 100 * s.codes_used, s.perplexity, (long long)s.images);
  };
  auto grid = [&](int64_t at_step) {
    char name[48];
    std::snprintf(name, sizeof name, "recon-%08lld.png", (long long)at_step);
    write_recon_grid(join_path(out, name), vq, shown, 32, device);
  };

  std::fprintf(stderr,
               "tokenizer: %lld parameters, %lldx%lld images x%lld ch -> %lldx%lld tokens, K=%lld, code dim %lld%s; "
               "%lld train images%s; %s%s\n",
               (long long)[&] {
                 int64_t n = 0;
                 for (auto& p : vq->parameters()) n += p.numel();
                 return n;
               }(),
               (long long)chw[1], (long long)chw[2], (long long)chw[0], (long long)(chw[1] / f), (long long)(chw[2] / f),
               (long long)K, (long long)vcfg.z_channels, vcfg.use_l2_norm ? " (l2-normalised)" : "",
               (long long)train.size(), test ? (", " + std::to_string(test->size()) + " test").c_str() : "",
               device.str().c_str(), autocast ? " bf16 autocast" : "");

  // ---------------------------------------------------------------- loop
  install_stop_handlers();
  const auto t0 = clock::now();
  Progress progress("train-tokenizer", sched.total_steps, "step", step);
  double acc_loss = 0;
  // Summed on the device and read once per log line (no per-step synchronisation).
  auto acc_rec = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
  auto acc_psnr = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
  int64_t acc_n = 0, window_start = step;
  auto window_hist = torch::zeros({K}, torch::TensorOptions(torch::kInt64).device(device));
  auto t_window = clock::now();
  bool stopped_early = false;
  const int64_t first_step = step;
  while (step < sched.total_steps) {
    if (stop_requested() || (stop_after > 0 && step - first_step >= stop_after)) {
      stopped_early = true;
      break;
    }
    if (max_minutes > 0 && std::chrono::duration<double>(clock::now() - t0).count() > 60 * max_minutes) {
      std::fprintf(stderr, "\ntime budget of %.1f min reached at step %lld\n", max_minutes, (long long)step);
      break;
    }
    auto idx = sampler.next();
    auto x = train.get(idx).to(device, /*non_blocking=*/true).to(torch::kFloat32).div_(255.0);
    if (flip) {
      auto g = at::make_generator<at::CPUGeneratorImpl>(seed * 1000003ULL + static_cast<uint64_t>(step));
      auto m = torch::rand({x.size(0)}, g).lt(0.5).to(device).view({-1, 1, 1, 1});
      x = torch::where(m, x.flip({3}), x);
    }

    torch::Tensor z, codes, rec_loss, cb_loss, commit_loss, recon;
    {
      Autocast ac(autocast, device.type(), torch::kBFloat16);
      z = vq->quantize->prepare(vq->encoder(x).to(torch::kFloat32));
    }
    auto e = vq->quantize->codebook();
    const int64_t D = z.size(1);
    auto z_flat = z.permute({0, 2, 3, 1}).reshape({-1, D});
    if (!codebook_initialised) {  // start the codebook on encoder outputs of the first batch
      torch::NoGradGuard ng;
      auto pick = torch::randint(z_flat.size(0), {K}, torch::TensorOptions(torch::kInt64).device(device));
      vq->quantize->embedding->weight.copy_(z_flat.detach().index_select(0, pick) +
                                            0.01 * torch::randn({K, D}, z.options()));
      e = vq->quantize->codebook();
      codebook_initialised = true;
    }
    {
      torch::NoGradGuard ng;
      codes = model::nearest_codes(z_flat, e);
    }
    auto zq_flat = e.index_select(0, codes);
    cb_loss = F::mse_loss(zq_flat, z_flat.detach());
    commit_loss = F::mse_loss(z_flat, zq_flat.detach());
    auto z_st = (z_flat + (zq_flat - z_flat).detach()).view({z.size(0), z.size(2), z.size(3), D}).permute({0, 3, 1, 2});
    {
      Autocast ac(autocast, device.type(), torch::kBFloat16);
      recon = vq->decoder(z_st).to(torch::kFloat32);
    }
    auto mse = F::mse_loss(recon, x);
    if (rec_kind == "l1") rec_loss = F::l1_loss(recon, x);
    else if (rec_kind == "l2") rec_loss = mse;
    else rec_loss = F::l1_loss(recon, x) + mse;
    auto loss = w_rec * rec_loss + w_cb * cb_loss + beta * commit_loss;

    opt.zero_grad();
    loss.backward();
    const double lr = sched.at(step);
    const double gnorm = clip_grad_norm(vq->parameters(), max_grad_norm);
    const double loss_v = loss.item<double>();
    if (!std::isfinite(loss_v) || !std::isfinite(gnorm)) {
      const std::string last = latest_checkpoint(ckpt_root);
      fail("step ", step, ": loss is ", loss_v, " (gradient norm ", gnorm, "); stopped without updating. Last good checkpoint: ",
           last.empty() ? std::string("none") : last, " (lower optimizer.params.learning_rate, or resume with --resume)");
    }
    opt.step(lr);
    ++step;

    {  // code usage: EMA of shares, window histogram, dead-code restarts
      torch::NoGradGuard ng;
      auto counts = torch::bincount(codes, {}, K);
      window_hist += counts;
      usage.mul_(usage_decay).add_(counts.to(torch::kFloat32) / static_cast<double>(codes.size(0)), 1 - usage_decay);
      if (dead_every > 0 && step % dead_every == 0) {
        auto dead = (usage * static_cast<double>(K) < dead_threshold).nonzero().flatten();
        const int64_t nd = dead.size(0);
        if (nd > 0) {
          auto pick = torch::randint(z_flat.size(0), {nd}, dead.options());
          auto& w = vq->quantize->embedding->weight;
          w.index_copy_(0, dead, z_flat.detach().index_select(0, pick) + 0.01 * torch::randn({nd, D}, z.options()));
          opt.reset_rows(w, dead);
          usage.index_fill_(0, dead, 1.0 / static_cast<double>(K));
          restarted_total += nd;
        }
      }
    }

    acc_loss += loss_v;
    acc_rec += rec_loss.detach().to(torch::kFloat64);
    acc_psnr += -10.0 * torch::log10(mse.detach().to(torch::kFloat64).clamp_min(1e-10));
    ++acc_n;
    if (step % log_every == 0 || step == sched.total_steps) {
      const double secs = std::chrono::duration<double>(clock::now() - t_window).count();
      const double used = (window_hist > 0).sum().item<double>() / static_cast<double>(K);
      const double ips = static_cast<double>((step - window_start) * batch) / std::max(1e-9, secs);
      const double psnr = acc_psnr.item<double>() / acc_n;
      metrics.write({{"step", step},
                     {"loss", acc_loss / acc_n},
                     {"rec_loss", acc_rec.item<double>() / acc_n},
                     {"psnr", psnr},
                     {"codebook_loss", cb_loss.item<double>()},
                     {"commit_loss", commit_loss.item<double>()},
                     {"lr", lr},
                     {"grad_norm", gnorm},
                     {"codes_used", used},
                     {"codes_restarted", restarted_total},
                     {"images_per_s", ips},
                     {"elapsed_s", std::chrono::duration<double>(clock::now() - t0).count()}});
      char extra[160];
      std::snprintf(extra, sizeof extra, "loss %.4f  psnr %.2f  codes %.0f%%  lr %.2e  %.0f img/s", acc_loss / acc_n,
                    psnr, 100 * used, lr, ips);
      progress.update(step, extra);
      acc_loss = 0;
      acc_rec.zero_();
      acc_psnr.zero_();
      acc_n = 0;
      window_hist.zero_();
      window_start = step;
      t_window = clock::now();
    }
    if (grid_every > 0 && step % grid_every == 0) grid(step);
    if (eval_every > 0 && step % eval_every == 0 && step != sched.total_steps) run_eval(step);
    if (save_every > 0 && step % save_every == 0 && step != sched.total_steps) save(step);
  }
  progress.update(step);
  progress.finish();
  const std::string where = save(step);
  std::fprintf(stderr, "%s at step %lld: checkpoint %s\n", stopped_early ? "stopped" : "finished", (long long)step,
               where.c_str());
  if (stopped_early) {
    std::fprintf(stderr, "resume with the same command and --resume\n");
    return;
  }
  grid(step);
  if (test) {
    auto s = evaluate_reconstruction(vq, *test, 0, 256, device);
    const double minutes = std::chrono::duration<double>(clock::now() - t0).count() / 60.0;
    metrics.write({{"step", step},
                   {"eval/psnr", s.psnr},
                   {"eval/codes_used", s.codes_used},
                   {"eval/perplexity", s.perplexity},
                   {"eval/images", s.images},
                   {"minutes", minutes}});
    nlohmann::json summary = {{"step", step},         {"test_psnr_db", s.psnr}, {"codes_used", s.codes_used},
                              {"perplexity", s.perplexity}, {"test_images", s.images}, {"minutes", minutes},
                              {"device", device.str()}};
    write_file_atomic(join_path(out, "eval.json"), summary.dump(2) + "\n");
    std::printf("test PSNR %.2f dB, codes used %.1f%% (%lld of %lld), perplexity %.1f, %lld test images, %.1f min\n", s.psnr,
                100 * s.codes_used, (long long)std::llround(s.codes_used * K), (long long)K, s.perplexity,
                (long long)s.images, minutes);
  }
  std::fprintf(stderr, "tokenizer: %s\n", join_path(out, "tokenizer.safetensors").c_str());
}

}  // namespace rar::training
