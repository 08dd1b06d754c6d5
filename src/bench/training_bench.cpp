// training_bench.cpp — see training_bench.h.
#include "bench/training_bench.h"

#include <chrono>
#include <cstdio>

#include "bench/timing.h"
#include "model/generator.h"
#include "model/ops/fp8.h"
#include "model/ops/fused.h"
#include "sampling/orders.h"
#include "training/adamw.h"
#include "training/optim_config.h"
#include "training/rar_objective.h"
#include "training/train_step.h"
#include "util/device.h"
#include "util/error.h"
#include "util/gpu.h"
#include "util/profile.h"

namespace rar::bench {

void bench_train(const TrainBench& b) {
  const auto& run = b.run;
  auto device = parse_device(run.device);
  check(run.precision == "bf16" || run.precision == "fp32" || run.precision == "tf32", "--precision: bf16, tf32 or fp32");
  parse_precision(run.precision == "bf16" ? "tf32" : run.precision);
  auto cfg = model::GeneratorConfig::preset(b.preset);
  cfg.dropout = cfg.attn_dropout = b.dropout;
  torch::manual_seed(0);
  model::Generator g(cfg);
  g->recompute_layers = std::min(b.recompute_layers, cfg.layers);
  g->set_recompute_mlp(b.recompute_mlp);
  g->use_path(b.plain ? model::OpPath::plain : model::OpPath::fused);
  check(b.fp8_scaling == "current" || b.fp8_scaling == "delayed", "--fp8-scaling: current or delayed, got '",
        b.fp8_scaling, "'");
  if (b.fp8) model::check_fp8_device(device, "--fp8");
  g->use_fp8(b.fp8, b.fp8_scaling == "delayed" ? model::Fp8History::kDefaultLength : 0);
  g->to(device);
  g->train();
  training::AdamWOptions ao;
  ao.beta2 = 0.96;
  ao.weight_decay = 0.03;
  ao.fused = true;  // ATen's fused AdamW (CUDA and CPU); the plain path is its tested reference
  training::AdamW opt(training::named_parameters(*g), ao);
  const auto params = g->parameters();
  const auto scan = sampling::scan_order("raster", cfg.seq_len);
  const auto i64 = torch::TensorOptions(torch::kInt64).device(device);
  auto tokens = torch::randint(0, cfg.codebook, {run.batch, cfg.seq_len}, i64);
  auto labels = torch::randint(0, cfg.classes, {run.batch}, i64);
  // the trainer's step: captured in a CUDA graph unless turned off or the run cannot be (CPU,
  // recomputed blocks)
  const auto why = b.graph ? training::graph_unavailable(g, device) : std::string("--no-graph");
  training::GradientStep gs(g, params, {run.precision == "bf16" && device.is_cuda(), 1.0, why.empty()});
  auto step = [&](int64_t i) {
    gs.run(tokens, labels, training::draw_objective(run.batch, 0, run.batch, scan, 1.0, 0.1, 0, i)).cpu();  // the trainer's read-back
    if (auto* h = g->fp8_history()) h->advance();  // as the trainer does after a step's backward
    opt.step(1e-4);
  };
  // the peak counts from before the first step: a captured step allocates its memory at capture
  gpu::reset_peak_memory(device);
  // The warm-up counts from the capture: a new graph's first replays are slow (it is uploaded), and
  // with delayed fp8 scaling the step is captured only once the history is primed (eager until then).
  // (at most max_eager steps before it: delayed scaling primes in two)
  const int64_t warmup = 3, max_eager = 16, timed = b.steps;
  int64_t done = 0;
  for (int64_t since = 0; since < warmup && done < warmup + max_eager; ++done) {
    step(done);
    if (!gs.graphed() || gs.captured()) ++since;
  }
  synchronize(device);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < timed; ++i) step(done + i);
  synchronize(device);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / timed;
  // 6 · params · positions FLOPs per sequence (forward 2, backward 4), positions = S + 1 fed.
  int64_t n = 0;
  for (auto& p : params) n += p.numel();
  const double flops = 6.0 * static_cast<double>(n) * (cfg.seq_len + 1) * run.batch;
  if (run.header)
    std::printf("| model | batch | precision | ms/step | sequences/s | tokens/s | TFLOP/s | peak GiB |\n"
                "|---|---|---|---|---|---|---|---|\n");
  // what the step ran in: bf16 autocast is CUDA's only (the trainer's rule); elsewhere float32
  std::string mode = run.precision == "bf16" && !device.is_cuda() ? "fp32" : run.precision;
  if (b.plain) mode += " plain";
  if (b.fp8) mode += " fp8 " + b.fp8_scaling;
  if (gs.graphed()) mode += " graph";
  if (g->recompute_layers > 0) mode += " ckpt " + cat(g->recompute_layers, "/", cfg.layers);
  if (g->recompute_mlp()) mode += " mlp-recompute";
  if (b.dropout != 0.1) mode += " dropout " + cat(b.dropout);
  std::printf("| %s | %lld | %s | %.0f | %.1f | %.1fk | %.1f | %.1f |\n", b.preset.c_str(), (long long)run.batch,
              mode.c_str(), s * 1e3, run.batch / s, run.batch * cfg.seq_len / s / 1e3, flops / s / 1e12,
              gpu::peak_memory_gib(device));
  if (run.profile > 0)
    profile_kernels(
        [&] {
          for (int64_t i = 0; i < 2; ++i) step(100 + i);
          synchronize(device);
        },
        device.is_cuda(), run.profile, run.trace);
}

}  // namespace rar::bench
