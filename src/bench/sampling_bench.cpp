// sampling_bench.cpp — see sampling_bench.h.
#include "bench/sampling_bench.h"

#include <cstdio>

#include "bench/timing.h"
#include "model/generator.h"
#include "model/ops/decode_ops.h"
#include "model/ops/fused.h"
#include "model/vqgan.h"
#include "model/weights.h"
#include "sampling/decode_pipeline.h"
#include "util/device.h"
#include "util/error.h"
#include "util/gpu.h"
#include "util/profile.h"

namespace rar::bench {

namespace {

// Convolution multiply-adds x2 of the decoder for a grid x grid token map (3x3 convs dominate).
double decode_flops(const model::VQConfig& c, int64_t grid) {
  double total = 0, res = static_cast<double>(grid), ch = c.base_channels * c.channel_mult.back();
  auto conv = [&](double in, double out, double k, double r) { total += in * out * k * k * r * r; };
  conv(c.z_channels, ch, 3, res);
  for (int j = 0; j < 2 * c.res_blocks; ++j) conv(ch, ch, 3, res);
  for (int64_t i = c.levels() - 1; i >= 0; --i) {
    double out = c.base_channels * c.channel_mult[i];
    for (int64_t j = 0; j < c.res_blocks; ++j) {
      conv(ch, out, 3, res), conv(out, out, 3, res);
      if (ch != out) conv(out, out, 1, res);
      ch = out;
    }
    if (i != 0) res *= 2, conv(ch, ch, 3, res);
  }
  conv(ch, c.image_channels, 3, res);
  return 2 * total;
}

}  // namespace

double sample_flops(const model::GeneratorConfig& c, int64_t steps, bool guided) {
  // the linear layers at every fed position, plus attention of each new query over the cached keys
  const double H = c.hidden, L = c.layers, I = c.mlp;
  const double per_pos = L * (3 * H * H + H * H + 2 * H * I + 6 * H * H) + 2 * H * H + H * c.codebook;
  double positions = steps + 1, attn = 0;
  for (int64_t n = 1; n <= steps + 1; ++n) attn += L * 2 * H * n;  // q·k and p·v per cached key
  return 2 * (positions * per_pos + attn) * (guided ? 2 : 1);
}

void bench_sample(const SampleBench& b) {
  const auto& run = b.run;
  auto device = parse_device(run.device);
  auto dtype = parse_precision(run.precision);
  torch::manual_seed(0);
  model::Generator g{nullptr};
  if (!b.generator.empty()) {
    g = model::load_generator(b.generator).model;
  } else {  // random adaLN so every path does real work
    g = model::Generator(model::GeneratorConfig::preset(b.preset));
    torch::NoGradGuard ng;
    for (auto& p : g->parameters()) p.normal_(0, 0.02);
  }
  const auto cfg = g->cfg;
  g->to(device, dtype);
  g->eval();
  const auto& o = b.sampling;
  sampling::Sampler sampler(g, o);
  model::VQModel vq{nullptr};
  if (b.decode) {
    vq = model::VQModel(model::VQConfig{});
    vq->to(device, dtype);
    vq->use_channels_last(b.channels_last);
    vq->eval();
  }
  // Random classes (as the reference measured), or K distinct classes, each repeated (the ADM
  // protocol's batches hold one or two classes).
  const int64_t K = b.distinct_classes;
  auto classes = K > 0 ? torch::randperm(cfg.classes, torch::kInt64)
                             .narrow(0, 0, std::min(K, cfg.classes))
                             .repeat_interleave((run.batch + K - 1) / K)
                             .narrow(0, 0, run.batch)
                       : torch::randint(0, cfg.classes, {run.batch}, torch::kInt64);
  const int64_t steps = o.steps > 0 ? std::min(o.steps, cfg.seq_len) : cfg.seq_len;
  gpu::reset_peak_memory(device);
  const double tokens_s = seconds_per_run(device, run.repeats, [&] { sampler.sample_batch(classes, 0); });
  double e2e_s = 0;
  if (b.decode) {
    // End to end as `rar sample` runs it: batch i decoded (on a side stream on CUDA) while batch
    // i+1 is generated; the time of `repeats` batches including the last one's decode, per batch.
    e2e_s = seconds_per_run(device, 1, [&] {
              sampling::DecodePipeline pipe(vq, b.decode_batch);
              for (int64_t r = 0; r < run.repeats; ++r) {
                auto t = sampler.sample_batch(classes, 0);
                if (!pipe.empty()) pipe.take();
                pipe.submit(t);
              }
              pipe.take();
            }) /
            static_cast<double>(run.repeats);
  }
  const double tflops = sample_flops(cfg, steps, o.cfg != 0) * run.batch / tokens_s / 1e12;
  if (run.header)
    std::printf("| model | batch | cfg | precision | engine | steps | tokens images/s | end-to-end images/s | TFLOP/s "
                "| of bf16 peak | peak GiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  const auto& sp = sampler.speculative_stats();  // summed over the timed batches
  const double per_call = sp.calls > 0 ? double(sp.tokens) / sp.calls : 1.0;
  std::string engine = sampling::engine_name(sampler.engine());
  if (K > 0) engine += ", " + std::to_string(K) + " classes";
  if (o.kv_cache == "fp8") engine += ", fp8 KV";
  if (o.attention_kernel != "auto") engine += ", " + o.attention_kernel + " attention";
  if (o.speculative > 0) engine += cat(", speculative ", o.speculative, " (", fixed1(per_call), " tokens per call)");
  std::printf("| %s | %lld | %g | %s | %s | %lld | %.1f | %s | %.1f | %s | %.1f |\n",
              b.generator.empty() ? b.preset.c_str() : b.generator.c_str(), (long long)run.batch, o.cfg,
              run.precision.c_str(), engine.c_str(), (long long)steps, run.batch / tokens_s,
              b.decode ? fixed1(run.batch / e2e_s).c_str() : "-", tflops, of_bf16_peak(tflops, device).c_str(),
              gpu::peak_memory_gib(device));
  // a few images: the time of one batch is the number a user waits for (with speculative
  // decoding: the model calls per batch and the time of one call)
  const double calls = sp.calls > 0 ? double(sp.calls) * steps / double(sp.tokens) : double(steps);
  if (run.batch <= 8)
    std::printf("latency: %.1f ms per batch of %lld (tokens)%s%s\n", 1e3 * tokens_s, (long long)run.batch,
                b.decode ? cat(", ", fixed1(1e3 * e2e_s), " ms end to end").c_str() : "",
                sp.calls > 0 ? cat("; ", fixed1(calls), " calls of ", o.speculative, " positions, ",
                                   static_cast<int>(1e3 * 1e3 * tokens_s / calls + 0.5), " us per call")
                                   .c_str()
                             : "");
  std::fflush(stdout);
  if (run.profile > 0)
    profile_kernels(
        [&] {
          sampler.sample_batch(classes, 0);
          synchronize(device);
        },
        device.is_cuda(), run.profile, run.trace);
}

void bench_attention(const AttentionBench& b) {
  const auto kernel = model::parse_attention_kernel(b.kernel);
  // the split kernel exists only fused with a step's q/k norms (time it with bench sample)
  check(kernel == model::AttentionKernel::warp || kernel == model::AttentionKernel::block, "bench attention: --attention-kernel ",
        b.kernel, " runs only inside a step (time it with bench sample); here warp or block");
  const auto& run = b.run;
  auto device = parse_device(run.device);
  auto dtype = parse_precision(run.precision);
  const auto cfg = model::GeneratorConfig::preset(b.preset);
  const int64_t R = run.batch * (b.cfg != 0 ? 2 : 1), heads = cfg.heads, hd = cfg.hidden / cfg.heads;
  const int64_t cap = cfg.seq_len + 1, fill = b.fill > 0 ? b.fill : cap / 2;
  check(fill <= cap, "--fill ", fill, " exceeds the cache's ", cap, " slots");
  const auto cache_t = sampling::parse_kv_cache(b.kv_cache).value_or(dtype);
  torch::manual_seed(0);
  auto opt = torch::TensorOptions().device(device).dtype(dtype);
  auto q = torch::randn({R, 1, heads, hd}, opt).transpose(1, 2);  // the layout qk_norm_split gives
  auto k = model::to_cache_dtype(torch::randn({R, heads, cap, hd}, opt), cache_t);
  auto v = model::to_cache_dtype(torch::randn({R, heads, cap, hd}, opt), cache_t);
  auto slot = torch::full({1}, fill - 1, torch::TensorOptions().device(device).dtype(torch::kInt64));
  auto valid = torch::arange(cap, slot.options()).le(slot).view({1, 1, 1, -1});
  torch::NoGradGuard ng;
  constexpr int kCalls = 20;
  const double s = seconds_per_run(device, run.repeats, [&] {
                     for (int i = 0; i < kCalls; ++i) model::decode_attention(q, k, v, slot, valid, model::OpPath::fused, kernel);
                   }) / kCalls;
  const double bytes = 2.0 * R * heads * fill * hd * k.element_size();
  if (run.header)
    std::printf("| model | rows | heads x hd | filled slots | cache | kernel | us per call | cache GB/s |\n"
                "|---|---|---|---|---|---|---|---|\n");
  const bool fused = model::fused_kernels_built() && device.is_cuda();
  std::printf("| %s | %lld | %lld x %lld | %lld of %lld | %s | %s | %.1f | %.0f |\n", b.preset.c_str(), (long long)R,
              (long long)heads, (long long)hd, (long long)fill, (long long)cap,
              b.kv_cache == "fp8" ? "fp8" : run.precision.c_str(),
              fused ? model::attention_kernel_name(kernel) : "plain (masked SDPA)", s * 1e6, bytes / s / 1e9);
  std::fflush(stdout);
}

void bench_decode(const DecodeBench& b) {
  const auto& run = b.run;
  auto device = parse_device(run.device);
  auto dtype = parse_precision(run.precision);
  model::VQConfig c;
  torch::manual_seed(0);
  model::VQModel vq(c);
  vq->to(device, dtype);
  vq->use_channels_last(b.channels_last);
  vq->eval();
  auto codes = torch::randint(0, c.codebook_size, {run.batch, 256}, torch::kInt64).to(device);
  gpu::reset_peak_memory(device);
  torch::NoGradGuard ng;
  const double s = seconds_per_run(device, run.repeats, [&] { vq->decode(codes); });
  if (run.header)
    std::printf("| decoder | batch | precision | images/s | TFLOP/s | peak GiB |\n|---|---|---|---|---|---|\n");
  std::printf("| maskgit-vqgan | %lld | %s | %.1f | %.1f | %.1f |\n", (long long)run.batch,
              (run.precision + (b.channels_last ? " channels-last" : "")).c_str(), run.batch / s,
              decode_flops(c, 16) * run.batch / s / 1e12, gpu::peak_memory_gib(device));
  std::fflush(stdout);
  if (run.profile > 0)
    profile_kernels(
        [&] {
          vq->decode(codes);
          synchronize(device);
        },
        device.is_cuda(), run.profile, run.trace);
}

}  // namespace rar::bench
