// rar_trainer.cpp — see rar_trainer.h.
#include "training/rar_trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "data/epoch_sampler.h"
#include "data/token_file.h"
#include "eval/nll.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/metrics_log.h"
#include "io/safetensors.h"
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
    randomness_anneal_start: 125_000
    randomness_anneal_end: 187_500
    scan_order: raster                # ours: the order used when not permuting
dataset:
  train_tokens: ""                    # ours: .rartok from `rar tokenize`
  val_tokens: ""                      # ours: held-out .rartok for validation NLL
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
)";
}

LossAndAccuracy forward_backward(model::Generator& g, const torch::Tensor& tokens, const torch::Tensor& labels,
                                 const ObjectiveDraws& draws, bool autocast, double grad_scale) {
  const auto device = tokens.device();
  auto orders = draws.orders.to(device, /*non_blocking=*/true);
  auto cond = g->condition_tokens(labels, draws.drop.to(device, /*non_blocking=*/true));
  torch::Tensor logits;
  {
    Autocast ac(autocast, device.type(), torch::kBFloat16);
    logits = g->forward(tokens, cond, orders);
  }
  auto la = next_token_loss(logits, tokens, orders);
  (la.loss * grad_scale).backward();
  return la;
}

namespace {

using clock_type = std::chrono::steady_clock;

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

}  // namespace

void train_rar(const Config& cfg, const TrainControl& control) {
  // ---------------------------------------------------------------- processes and device
  const DistEnv env = dist_env_from_environment();
  const torch::Device device = rank_device(parse_device(cfg.get_string("training.device")), env);
  parse_precision(cfg.get_bool("training.enable_tf32") ? "tf32" : "fp32");
  const std::string mp = cfg.get_string("training.mixed_precision");
  check(mp == "no" || mp == "fp32" || mp == "bf16", "training.mixed_precision: expected no or bf16, got '", mp, "'");
  const bool autocast = mp == "bf16" && device.is_cuda();
  const int cuda_index = device.is_cuda() ? std::max<int>(0, device.index()) : -1;
  const std::string gdt = cfg.get_string("training.ddp_grad_dtype");
  check(gdt == "fp32" || gdt == "bf16", "training.ddp_grad_dtype: expected fp32 or bf16, got '", gdt, "'");
  DataParallel dp(env, device, cfg.get_double("training.ddp_bucket_mb"), gdt == "bf16" ? torch::kBFloat16 : torch::kFloat32);
  const bool main = dp.is_main();
  auto say = [&](const char* fmt, auto... args) {
    if (main) std::fprintf(stderr, fmt, args...);
  };

  const std::string out = cfg.get_string("experiment.output_dir");
  check(!out.empty(), "experiment.output_dir is empty");
  const std::string ckpt_root = join_path(out, "checkpoints");
  if (main) {
    make_dirs(out);
    remove_stale_temp_files(out);  // left by a run killed mid-write
    remove_stale_temp_files(ckpt_root);
  }
  check_fresh_output(ckpt_root, control.resume);

  // ---------------------------------------------------------------- data
  const model::GeneratorConfig gcfg = generator_config_of(cfg);
  const std::string train_path = cfg.get_string("dataset.train_tokens");
  check(!train_path.empty(), "dataset.train_tokens is not set (a .rartok file from `rar tokenize`; --data)");
  data::TokenFile train(train_path);
  train.expect(gcfg.codebook, gcfg.seq_len);
  check(train.info().classes <= gcfg.classes, train_path, ": ", train.info().classes,
        " classes, but model.generator.condition_num_classes is ", gcfg.classes);
  std::unique_ptr<data::TokenFile> val;
  if (const std::string v = cfg.get_string("dataset.val_tokens"); !v.empty()) {
    val = std::make_unique<data::TokenFile>(v);
    val->expect(gcfg.codebook, gcfg.seq_len);
  }

  // ---------------------------------------------------------------- model, optimizer, schedules
  const uint64_t seed = static_cast<uint64_t>(cfg.get_int("training.seed"));
  torch::manual_seed(seed);
  model::Generator g(gcfg);  // the published init
  if (const std::string init = cfg.get_string("training.init_from"); !init.empty()) {
    torch::NoGradGuard ng;
    model::load_weights(*g, io::read_checkpoint(init), init);
  }
  if (cfg.get_bool("model.generator.use_checkpoint")) {
    const int64_t n = cfg.get_int("model.generator.checkpoint_layers");
    g->checkpoint_layers = n < 0 ? gcfg.layers : n;
  }
  g->to(device);
  g->train();
  dp.broadcast(g->parameters());

  AdamW opt(named_parameters(*g), adamw_options(cfg));
  const LrSchedule lr_of = lr_schedule(cfg);
  const int64_t anneal_start = cfg.get_int("model.generator.randomness_anneal_start"),
                anneal_end = cfg.get_int("model.generator.randomness_anneal_end");
  check(anneal_end >= anneal_start, "randomness_anneal_end must be >= randomness_anneal_start");
  const double label_dropout = cfg.get_double("model.generator.class_label_dropout");
  const auto scan = sampling::scan_order(cfg.get_string("model.generator.scan_order"), gcfg.seq_len);
  const int64_t local_batch = cfg.get_int("training.per_gpu_batch_size"),
                accum = cfg.get_int("training.gradient_accumulation_steps");
  check(local_batch > 0 && accum > 0 && lr_of.total_steps > 0,
        "per_gpu_batch_size, gradient_accumulation_steps and max_train_steps must be positive");
  const int64_t micro_global = local_batch * dp.world(), global_batch = micro_global * accum;
  data::EpochSampler sampler(train.info().count, micro_global, seed, dp.rank(), dp.world());
  const double max_grad_norm = cfg.get_double("training.max_grad_norm");

  const bool use_ema = cfg.get_bool("training.use_ema");
  const double ema_decay = cfg.get_double("training.ema_decay");
  std::vector<std::pair<std::string, torch::Tensor>> ema;  // fp32 copies
  if (use_ema)
    for (auto& [n, p] : named_parameters(*g)) ema.emplace_back(n, p.detach().clone());

  // ---------------------------------------------------------------- resume
  int64_t step = 0;
  const std::string latest = control.resume ? latest_checkpoint(ckpt_root) : "";
  if (control.resume && latest.empty()) say("no checkpoint in %s: starting from scratch\n", ckpt_root.c_str());
  if (!latest.empty()) {
    check_resume_config(latest, cfg);
    auto ck = load_checkpoint(latest);
    {
      torch::NoGradGuard ng;
      model::load_weights(*g, ck.model, latest);
    }
    opt.load_state(ck.optimizer);
    for (auto& [n, t] : ema) t.copy_(ck.optimizer.at("ema." + n));
    // Each rank restores its own dropout stream when the checkpoint has it.
    io::StateDict rng;
    const std::string suffix = dp.world() > 1 ? "." + std::to_string(dp.rank()) : "";
    if (ck.optimizer.has("rng.cpu" + suffix)) {
      rng.set("rng.cpu", ck.optimizer.at("rng.cpu" + suffix));
      if (ck.optimizer.has("rng.cuda" + suffix)) rng.set("rng.cuda", ck.optimizer.at("rng.cuda" + suffix));
      load_rng_states(rng, cuda_index);
    }
    step = ck.state.at("step").get<int64_t>();
    sampler.set_position(ck.state.at("data_position").get<int64_t>());
    if (main) io::truncate_metrics(join_path(out, "metrics.jsonl"), step);  // rows after the checkpoint come again
    say("resumed from %s (step %lld)\n", latest.c_str(), (long long)step);
  }
  const std::string config_yaml = cfg.to_yaml();
  if (main) write_file_atomic(join_path(out, "config.yaml"), config_yaml);

  // Gathers every rank's RNG states to rank 0 (each writes its own when world > 1: rng.cpu.<rank>).
  auto save = [&](int64_t at_step) -> std::string {
    {  // every rank holds the same weights, so every rank takes the same decision
      io::StateDict weights;
      for (auto& [n, p] : named_parameters(*g)) weights.set(n, p.detach());
      check_finite_weights(weights, at_step);
    }
    io::StateDict rng;
    save_rng_states(rng, cuda_index);
    std::string where;
    if (dp.world() > 1) {
      // Ranks write their RNG state beside the checkpoint; rank 0 writes the rest.
      // (Small files, one per rank, read back on resume.)
      make_dirs(ckpt_root);
      io::StateDict mine;
      mine.set("rng.cpu." + std::to_string(dp.rank()), rng.at("rng.cpu"));
      if (rng.has("rng.cuda")) mine.set("rng.cuda." + std::to_string(dp.rank()), rng.at("rng.cuda"));
      io::write_safetensors(join_path(ckpt_root, ".rng-rank" + std::to_string(dp.rank()) + ".safetensors"), mine);
      dp.barrier();
    }
    if (main) {
      TrainCheckpoint ck;
      ck.model = model::state_dict_of(*g);
      ck.model.metadata[model::kGeneratorConfigKey] = gcfg.to_json().dump();
      ck.optimizer = opt.state();
      for (auto& [n, t] : ema) ck.optimizer.set("ema." + n, t.cpu());
      if (dp.world() > 1) {
        for (int64_t r = 0; r < dp.world(); ++r) {
          const std::string f = join_path(ckpt_root, ".rng-rank" + std::to_string(r) + ".safetensors");
          auto sd = io::read_safetensors(f);
          for (const auto& n : sd.names()) ck.optimizer.set(n, sd.at(n));
          remove_tree(f);
        }
      } else {
        for (const auto& n : rng.names()) ck.optimizer.set(n, rng.at(n));
      }
      ck.state = {{"data_position", sampler.position()}, {"kind", "rar"}, {"world_size", dp.world()},
                  {"global_batch", global_batch}};
      ck.config_yaml = config_yaml;
      // The checkpoint first: the exported weights never get ahead of what --resume can restore.
      where = save_checkpoint(ckpt_root, at_step, ck, cfg.get_int("experiment.keep_last"));
      model::save_generator(join_path(out, "generator.safetensors"), g);
      if (use_ema) {
        io::StateDict e;
        for (auto& [n, t] : ema) e.set(n, t.cpu());
        e.metadata[model::kGeneratorConfigKey] = gcfg.to_json().dump();
        e.metadata["format"] = "pt";
        io::write_safetensors(join_path(out, "generator_ema.safetensors"), e);
      }
    }
    dp.barrier();
    return where;
  };

  // ---------------------------------------------------------------- validation and sample grids
  std::unique_ptr<MetricsLog> metrics;
  if (main) metrics = std::make_unique<MetricsLog>(join_path(out, "metrics.jsonl"), !latest.empty());
  const int64_t eval_examples = cfg.get_int("experiment.eval_examples");
  auto validate = [&](int64_t at_step) {
    if (!val || !main) return;
    torch::NoGradGuard ng;
    g->eval();
    int64_t n = val->info().count;
    if (eval_examples > 0) n = std::min(n, eval_examples);
    auto rows = torch::arange(n, torch::kInt64);
    auto [tokens, labels] = val->batch(rows);
    torch::Tensor nll;
    {
      Autocast ac(autocast, device.type(), torch::kBFloat16);
      nll = eval::sequence_nll(g, tokens, labels, {}, false, local_batch);
    }
    g->train();
    const double v = nll.mean().item<double>();
    metrics->write({{"step", at_step}, {"val/nll", v}, {"val/sequences", n}});
    std::fprintf(stderr, "\nvalidation step %lld: NLL %.4f nats/token (raster, %lld sequences)\n", (long long)at_step, v,
                 (long long)n);
  };
  std::unique_ptr<model::LoadedVQ> tokenizer;
  const std::string tok_path = cfg.get_string("model.vq_model.pretrained_tokenizer_weight");
  if (main && !tok_path.empty()) {
    tokenizer = std::make_unique<model::LoadedVQ>(model::load_vq(tok_path, device));
    check(tokenizer->cfg.codebook_size == gcfg.codebook, tok_path, ": tokenizer has ", tokenizer->cfg.codebook_size,
          " codes, the generator ", gcfg.codebook);
  }
  auto sample_grid = [&](int64_t at_step) {
    if (!tokenizer) return;
    torch::NoGradGuard ng;
    g->eval();
    sampling::SamplingOptions so;
    so.cfg = cfg.get_double("model.generator.guidance_scale");
    so.cfg_power = cfg.get_double("model.generator.guidance_scale_pow");
    so.temperature = cfg.get_double("model.generator.randomize_temperature");
    so.seed = seed;
    const int64_t classes = std::min<int64_t>(gcfg.classes, 10), per = 8;
    auto cls = sampling::class_list({}, true, per, classes);
    torch::Tensor tokens;
    {
      Autocast ac(autocast, device.type(), torch::kBFloat16);
      sampling::Sampler s(g, so);
      tokens = s.sample(cls.to(device), 80);
    }
    auto images = tokenizer->model->decode(tokens.to(device)).cpu();
    g->train();
    char name[48];
    std::snprintf(name, sizeof name, "samples-%08lld.png", (long long)at_step);
    io::write_image(join_path(out, name), io::make_grid(images, per));
  };

  int64_t params = 0;
  for (auto& p : g->parameters()) params += p.numel();
  say("rar train: %.1fM parameters (H=%lld L=%lld), %lld sequences of %lld tokens, V=%lld, C=%lld; global batch %lld "
      "(%lld x %lld ranks x %lld accumulation); %s%s, data parallel: %s\n",
      params / 1e6, (long long)gcfg.hidden, (long long)gcfg.layers, (long long)train.info().count, (long long)gcfg.seq_len,
      (long long)gcfg.codebook, (long long)gcfg.classes, (long long)global_batch, (long long)local_batch,
      (long long)dp.world(), (long long)accum, device.str().c_str(), autocast ? " bf16 autocast" : " fp32", dp.backend());

  // ---------------------------------------------------------------- loop
  install_stop_handlers();
  const double max_minutes = cfg.get_double("training.max_minutes");
  const int64_t log_every = std::max<int64_t>(1, cfg.get_int("experiment.log_every"));
  const int64_t save_every = cfg.get_int("experiment.save_every"), eval_every = cfg.get_int("experiment.eval_every"),
                gen_every = cfg.get_int("experiment.generate_every");
  std::unique_ptr<Progress> progress;
  if (main) progress = std::make_unique<Progress>("train", lr_of.total_steps, "step", step);
  const auto t0 = clock_type::now();
  auto t_window = t0;
  double acc_loss = 0, acc_correct = 0, acc_tokens = 0;
  int64_t window_steps = 0;
  const int64_t first_step = step;
  bool stopped = false;
  const auto params_list = g->parameters();
  dp.attach(params_list);
  // Every rank must take the same stop decision. One process reads its flags before each step;
  // several combine theirs with the step's loss (one all-reduce and one read-back per step) and act
  // on them before the next step.
  auto local_flags = [&](int64_t steps_done) {
    return std::make_pair(stop_requested() || (control.stop_after > 0 && steps_done - first_step >= control.stop_after),
                          max_minutes > 0 &&
                              std::chrono::duration<double>(clock_type::now() - t0).count() > 60 * max_minutes);
  };
  bool agreed_stop = false, agreed_out_of_time = false;
  while (step < lr_of.total_steps) {
    auto [stop, out_of_time] = dp.world() > 1 ? std::make_pair(agreed_stop, agreed_out_of_time) : local_flags(step);
    if (stop || out_of_time) {
      stopped = true;
      if (out_of_time) say("\ntime budget of %.1f min reached at step %lld\n", max_minutes, (long long)step);
      break;
    }
    const double lr = lr_of.at(step), r = randomness(step, anneal_start, anneal_end);
    opt.zero_grad();
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions(torch::kFloat32).device(device));
    torch::Tensor correct_sum = torch::zeros({}, torch::TensorOptions(torch::kInt64).device(device));
    for (int64_t micro = 0; micro < accum; ++micro) {
      if (micro == accum - 1) dp.arm();  // this backward's gradients are final: stream them out
      auto idx = sampler.next();
      auto [tokens, labels] = train.batch(torch::tensor(idx, torch::kInt64));
      auto d = draw_objective(global_batch, micro * micro_global + dp.rank() * local_batch, local_batch, scan, r,
                              label_dropout, seed, step);
      auto la = forward_backward(g, tokens.to(device, /*non_blocking=*/true), labels.to(device, /*non_blocking=*/true), d,
                                 autocast, 1.0 / static_cast<double>(accum));
      loss_sum += la.loss.detach();
      correct_sum += la.correct;
    }
    dp.finish();
    if (step == first_step && dp.world() > 1)
      say("gradient buckets: %lld, %lld all-reduced while backward was still running\n", (long long)dp.buckets(),
          (long long)dp.overlapped());
    // The step's numbers, read back once: [loss, correct, gradient norm, stop, out of time]
    auto stats = torch::stack({loss_sum.to(torch::kFloat64) / static_cast<double>(accum), correct_sum.to(torch::kFloat64),
                               clip_grad_norm_(params_list, max_grad_norm).to(torch::kFloat64)});
    if (dp.world() > 1) {
      const auto [s_local, t_local] = local_flags(step + 1);
      stats = torch::cat({stats, torch::tensor({s_local ? 1.0 : 0.0, t_local ? 1.0 : 0.0}, torch::kFloat64)
                                     .to(device, /*non_blocking=*/true)});
      dp.sum_(stats);  // the gradient norm is the same on every rank (averaged gradients)
      stats.div_(static_cast<double>(dp.world()));
    }
    const auto host = stats.cpu();
    const double* h = host.data_ptr<double>();
    double loss_v = h[0], correct_v = h[1] * dp.world();
    const double gnorm = h[2];
    if (dp.world() > 1) {
      agreed_stop = h[3] > 0;
      agreed_out_of_time = h[4] > 0;
    }
    if (!std::isfinite(loss_v) || !std::isfinite(gnorm)) {
      const std::string last = latest_checkpoint(ckpt_root);
      fail("step ", step, ": loss is ", loss_v, " (gradient norm ", gnorm,
           "); stopped without updating. Last good checkpoint: ", last.empty() ? std::string("none") : last,
           " (lower optimizer.params.learning_rate, then --resume)");
    }
    opt.step(lr);
    if (use_ema) {
      torch::NoGradGuard ng;
      size_t i = 0;
      for (auto& p : params_list) ema[i++].second.lerp_(p.detach(), 1 - ema_decay);
    }
    ++step;
    acc_loss += loss_v;
    acc_correct += correct_v;
    acc_tokens += static_cast<double>(global_batch * gcfg.seq_len);
    ++window_steps;

    if (main && (step % log_every == 0 || step == lr_of.total_steps)) {
      const double secs = std::chrono::duration<double>(clock_type::now() - t_window).count();
      const double seq_s = window_steps * global_batch / std::max(secs, 1e-9);
      metrics->write({{"step", step},
                      {"loss", acc_loss / window_steps},
                      {"accuracy", acc_correct / acc_tokens},
                      {"lr", lr},
                      {"randomness", r},
                      {"grad_norm", gnorm},
                      {"sequences_per_s", seq_s},
                      {"tokens_per_s", seq_s * gcfg.seq_len},
                      {"elapsed_s", std::chrono::duration<double>(clock_type::now() - t0).count()}});
      char extra[200];
      std::snprintf(extra, sizeof extra, "loss %.4f  acc %.3f  lr %.2e  r %.2f  %.0f tok/s", acc_loss / window_steps,
                    acc_correct / acc_tokens, lr, r, seq_s * gcfg.seq_len);
      progress->update(step, extra);
      acc_loss = acc_correct = acc_tokens = 0;
      window_steps = 0;
      t_window = clock_type::now();
    }
    if (eval_every > 0 && step % eval_every == 0) validate(step);
    if (gen_every > 0 && step % gen_every == 0 && main) sample_grid(step);
    if (save_every > 0 && step % save_every == 0 && step != lr_of.total_steps) save(step);
  }
  if (progress) {
    progress->update(step);
    progress->finish();
  }
  const std::string where = save(step);
  say("%s at step %lld: checkpoint %s\n", stopped ? "stopped" : "finished", (long long)step, where.c_str());
  if (stopped) {
    say("resume with the same command and --resume\n");
    return;
  }
  if (eval_every <= 0 || step % eval_every != 0) validate(step);
  if (gen_every <= 0 || step % gen_every != 0) sample_grid(step);
  say("generator: %s\n", join_path(out, "generator.safetensors").c_str());
}

}  // namespace rar::training
