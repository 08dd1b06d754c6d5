// `rar bench sample|decode` — speed of generation and decoding with random weights (speed does
// not depend on the values). One markdown table row per configuration: images/s, TFLOP/s and
// peak GPU memory, comparable with ../shared/BASELINES.md.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "util/gpu.h"
#include "model/ops/decode_ops.h"
#include "model/ops/fused.h"
#include "model/generator.h"
#include "model/weights.h"
#include "model/vqgan.h"
#include "data/token_file.h"
#include "sampling/decode_pipeline.h"
#include "sampling/orders.h"
#include "sampling/sampler.h"
#include "training/adamw.h"
#include "training/optim_config.h"
#include "training/rar_objective.h"
#include "training/rar_trainer.h"
#include "util/device.h"
#include "util/profile.h"
#include "util/error.h"

namespace rar::cli {
namespace {

struct BenchArgs {
  std::string model = "rar_b", device = "auto", precision = "bf16", engine = "auto", kv_cache = "model";
  std::string attention;  // decode-attention kernel: "" (as RAR_DECODE_ATTENTION says), auto, warp, block or split
  int64_t batch = 128, steps = 0, repeats = 2;
  double cfg = 4.0;
  bool decode = false, header = true, checkpoint = false, plain = false, channels_last = false, structured = false,
       no_graph = false;
  int64_t checkpoint_layers = 0;
  int profile = 0;
  std::string trace;
  double dropout = 0.1;
  int64_t seed = 0, count = 10000, distinct = 0, decode_batch = 64, fill = 0, speculative = 0;
  std::string out, generator;
};

std::string fixed1(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// Dense bf16 tensor-core peak of an H100/H200 SXM (TFLOP/s): the roofline the tables compare with.
constexpr double kBf16PeakTflops = 989.0;

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

void reset_peak(const torch::Device& d) {
  gpu::reset_peak_memory(d);
}

double peak_gib(const torch::Device& d) {
  return gpu::peak_memory_gib(d);
}

// Multiply-adds of generating one image's tokens (x2 for FLOPs): the linear layers at every fed
// position, plus attention of each new query over the cached keys.
double sample_flops(const model::GeneratorConfig& c, int64_t steps, bool guided) {
  const double H = c.hidden, L = c.layers, I = c.mlp;
  const double per_pos = L * (3 * H * H + H * H + 2 * H * I + 6 * H * H) + 2 * H * H + H * c.codebook;
  double positions = steps + 1, attn = 0;
  for (int64_t n = 1; n <= steps + 1; ++n) attn += L * 2 * H * n;  // q·k and p·v per cached key
  return 2 * (positions * per_pos + attn) * (guided ? 2 : 1);
}

double decode_flops(const model::VQConfig& c, int64_t grid) {
  // Convolution multiply-adds summed over the decoder (3x3 convs dominate).
  double total = 0, res = grid, ch = c.base_channels * c.channel_mult.back();
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

template <class F>
double time_runs(const torch::Device& d, int64_t repeats, F&& f) {
  f();  // warm-up
  sync(d);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < repeats; ++i) f();
  sync(d);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / repeats;
}

void run_sample(const BenchArgs& a) {
  if (!a.attention.empty()) model::set_decode_attention_kernel(a.attention);
  auto device = parse_device(a.device);
  auto dtype = parse_precision(a.precision);
  // a preset with random weights, or a trained generator (--generator: what speculative decoding
  // gains depends on the model's distributions, which random weights do not have)
  torch::manual_seed(0);
  model::Generator g{nullptr};
  if (!a.generator.empty()) {
    g = model::load_generator(a.generator).model;
  } else {  // random adaLN so every path does real work
    g = model::Generator(model::GeneratorConfig::preset(a.model));
    torch::NoGradGuard ng;
    for (auto& p : g->parameters()) p.normal_(0, 0.02);
  }
  const auto cfg = g->cfg;
  g->to(device, dtype);
  g->eval();
  sampling::SamplingOptions o;
  o.cfg = a.cfg;
  o.steps = a.steps;
  o.engine = a.engine;
  o.kv_cache = a.kv_cache;
  o.speculative = a.speculative;
  sampling::Sampler sampler(g, o);
  model::VQModel vq{nullptr};
  if (a.decode) {
    vq = model::VQModel(model::VQConfig{});
    vq->to(device, dtype == torch::kFloat32 ? torch::kFloat32 : dtype);
    vq->use_channels_last(a.channels_last);
    vq->eval();
  }
  // Random classes (as the reference measured), or --distinct-classes K: K classes, each repeated
  // (the ADM protocol's batches hold one or two classes).
  auto classes = a.distinct > 0
                     ? torch::randperm(cfg.classes, torch::kInt64).narrow(0, 0, std::min(a.distinct, cfg.classes))
                           .repeat_interleave((a.batch + a.distinct - 1) / a.distinct)
                           .narrow(0, 0, a.batch)
                     : torch::randint(0, cfg.classes, {a.batch}, torch::kInt64);
  const int64_t steps = a.steps > 0 ? std::min(a.steps, cfg.seq_len) : cfg.seq_len;
  reset_peak(device);
  double tokens_s = time_runs(device, a.repeats, [&] { sampler.sample_batch(classes, 0); });
  double e2e_s = 0;
  if (a.decode) {
    // End to end as `rar sample` runs it: batch i decoded (on a side stream on CUDA) while batch
    // i+1 is generated; the time of `repeats` batches including the last one's decode, per batch.
    e2e_s = time_runs(device, 1, [&] {
              sampling::DecodePipeline pipe(vq, a.decode_batch);
              for (int64_t r = 0; r < a.repeats; ++r) {
                auto t = sampler.sample_batch(classes, 0);
                if (!pipe.empty()) pipe.take();
                pipe.submit(t);
              }
              pipe.take();
            }) /
            static_cast<double>(a.repeats);
  }
  double flops = sample_flops(cfg, steps, a.cfg != 0) * a.batch;
  const double tflops = flops / tokens_s / 1e12;
  if (a.header)
    std::printf("| model | batch | cfg | precision | engine | steps | tokens images/s | end-to-end images/s | TFLOP/s "
                "| of bf16 peak | peak GiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  const auto& sp = sampler.speculative_stats();  // summed over the timed batches
  const double per_call = sp.calls > 0 ? double(sp.tokens) / sp.calls : 1.0;
  std::printf("| %s | %lld | %g | %s | %s | %lld | %.1f | %s | %.1f | %s | %.1f |\n",
              a.generator.empty() ? a.model.c_str() : a.generator.c_str(),
              (long long)a.batch, a.cfg, a.precision.c_str(),
              (std::string(sampling::engine_name(sampler.engine())) +
               (a.distinct > 0 ? ", " + std::to_string(a.distinct) + " classes" : "") +
               (a.kv_cache == "fp8" ? ", fp8 KV" : "") +
               (model::decode_attention_kernel() != "auto" ? ", " + model::decode_attention_kernel() + " attention" : "") +
               (model::skinny_linear_enabled() && a.batch * (a.cfg != 0 ? 2 : 1) <= 8 ? ", skinny linear" : "") +
               (model::pdl_enabled() ? ", pdl" : "") +
               (a.speculative > 0 ? cat(", speculative ", a.speculative, " (", fixed1(per_call), " tokens per call)") : ""))
                  .c_str(),
              (long long)steps, a.batch / tokens_s, a.decode ? fixed1(a.batch / e2e_s).c_str() : "-", tflops,
              device.is_cuda() ? cat(static_cast<int>(100 * tflops / kBf16PeakTflops + 0.5), "%").c_str() : "-",
              peak_gib(device));
  // with --speculative: model calls per batch (the timed batches' mean) and the time of one call
  const double calls = sp.calls > 0 ? double(sp.calls) * steps / double(sp.tokens) : double(steps);
  // a few images: the time of one batch is the number a user waits for
  if (a.batch <= 8)
    std::printf("latency: %.1f ms per batch of %lld (tokens)%s%s\n", 1e3 * tokens_s, (long long)a.batch,
                a.decode ? cat(", ", fixed1(1e3 * e2e_s), " ms end to end").c_str() : "",
                sp.calls > 0 ? cat("; ", fixed1(calls), " calls of ", a.speculative, " positions, ",
                                   cat(static_cast<int>(1e3 * 1e3 * tokens_s / calls + 0.5)), " us per call").c_str()
                             : "");
  std::fflush(stdout);
  if (a.profile > 0)
    profile_kernels(
        [&] {
          sampler.sample_batch(classes, 0);
          sync(device);
        },
        device.is_cuda(), a.profile, a.trace);
}

// One decode step's attention alone (model/ops/decode_ops decode_attention: the CUDA kernel, or the
// masked SDPA of the plain path): every row and head of a preset's guided batch attends over a
// cache filled to `fill` slots (0 = half of it, the mean over a generation). Prints time per call
// and the cache bytes read per second, the number to compare with the H200's 4.8 TB/s.
void run_attention(const BenchArgs& a) {
  // the split kernel exists only fused with a step's q/k norms (bench sample --attention-kernel split)
  check(a.attention != "split" && a.attention != "auto", "bench attention: --attention-kernel ", a.attention,
        " selects the split kernel, which runs only inside a step (time it with bench sample); here warp or block");
  model::set_decode_attention_kernel(a.attention.empty() ? "warp" : a.attention);  // auto would run warp here
  auto device = parse_device(a.device);
  auto dtype = parse_precision(a.precision);
  const auto cfg = model::GeneratorConfig::preset(a.model);
  const int64_t R = a.batch * (a.cfg != 0 ? 2 : 1), heads = cfg.heads, hd = cfg.hidden / cfg.heads;
  const int64_t cap = cfg.seq_len + 1, fill = a.fill > 0 ? a.fill : cap / 2;
  check(fill <= cap, "--fill ", fill, " exceeds the cache's ", cap, " slots");
  const auto cache_t = sampling::parse_kv_cache(a.kv_cache).value_or(dtype);
  torch::manual_seed(0);
  auto opt = torch::TensorOptions().device(device).dtype(dtype);
  auto q = torch::randn({R, 1, heads, hd}, opt).transpose(1, 2);  // the layout qk_norm_split gives
  auto k = model::to_cache_dtype(torch::randn({R, heads, cap, hd}, opt), cache_t);
  auto v = model::to_cache_dtype(torch::randn({R, heads, cap, hd}, opt), cache_t);
  auto slot = torch::full({1}, fill - 1, torch::TensorOptions().device(device).dtype(torch::kInt64));
  auto valid = torch::arange(cap, slot.options()).le(slot).view({1, 1, 1, -1});
  torch::NoGradGuard ng;
  constexpr int kCalls = 20;
  const double s = time_runs(device, a.repeats, [&] {
                     for (int i = 0; i < kCalls; ++i) model::decode_attention(q, k, v, slot, valid);
                   }) / kCalls;
  const double bytes = 2.0 * R * heads * fill * hd * k.element_size();
  if (a.header)
    std::printf("| model | rows | heads x hd | filled slots | cache | kernel | us per call | cache GB/s |\n"
                "|---|---|---|---|---|---|---|---|\n");
  const bool kernel = model::fused_kernels_enabled() && device.is_cuda();
  std::printf("| %s | %lld | %lld x %lld | %lld of %lld | %s | %s | %.1f | %.0f |\n", a.model.c_str(), (long long)R,
              (long long)heads, (long long)hd, (long long)fill, (long long)cap,
              a.kv_cache == "fp8" ? "fp8" : a.precision.c_str(),
              kernel ? model::decode_attention_kernel().c_str() : "plain (masked SDPA)", s * 1e6, bytes / s / 1e9);
  std::fflush(stdout);
}

void run_decode(const BenchArgs& a) {
  auto device = parse_device(a.device);
  auto dtype = parse_precision(a.precision);
  model::VQConfig c;
  torch::manual_seed(0);
  model::VQModel vq(c);
  vq->to(device, dtype);
  vq->use_channels_last(a.channels_last);
  vq->eval();
  auto codes = torch::randint(0, c.codebook_size, {a.batch, 256}, torch::kInt64).to(device);
  reset_peak(device);
  torch::NoGradGuard ng;
  double s = time_runs(device, a.repeats, [&] { vq->decode(codes); });
  if (a.header)
    std::printf("| decoder | batch | precision | images/s | TFLOP/s | peak GiB |\n|---|---|---|---|---|---|\n");
  std::printf("| maskgit-vqgan | %lld | %s | %.1f | %.1f | %.1f |\n", (long long)a.batch,
              (a.precision + (a.channels_last ? " channels-last" : "")).c_str(),
              a.batch / s, decode_flops(c, 16) * a.batch / s / 1e12, peak_gib(device));
  std::fflush(stdout);
  if (a.profile > 0)
    profile_kernels(
        [&] {
          vq->decode(codes);
          sync(device);
        },
        device.is_cuda(), a.profile, a.trace);
}

}  // namespace

// Training steps as in BASELINES.md: forward + backward + clipping + AdamW, every sequence
// permuted (r = 1), label dropout 0.1, random tokens, bf16 autocast (or fp32/tf32).
void run_train(const BenchArgs& a) {
  auto device = parse_device(a.device);
  check(a.precision == "bf16" || a.precision == "fp32" || a.precision == "tf32", "--precision: bf16, tf32 or fp32");
  parse_precision(a.precision == "bf16" ? "tf32" : a.precision);
  auto cfg = model::GeneratorConfig::preset(a.model);
  cfg.dropout = cfg.attn_dropout = a.dropout;
  torch::manual_seed(0);
  model::Generator g(cfg);
  g->recompute_layers = a.checkpoint ? cfg.layers : std::min(a.checkpoint_layers, cfg.layers);
  model::set_fused_kernels(!a.plain);
  g->to(device);
  g->train();
  training::AdamWOptions ao;
  ao.beta2 = 0.96;
  ao.weight_decay = 0.03;
  ao.fused = true;  // ATen's fused AdamW (CUDA and CPU); the plain path is its tested reference
  training::AdamW opt(training::named_parameters(*g), ao);
  const auto params = g->parameters();
  const auto scan = sampling::scan_order("raster", cfg.seq_len);
  auto tokens = torch::randint(0, cfg.codebook, {a.batch, cfg.seq_len}, torch::TensorOptions(torch::kInt64).device(device));
  auto labels = torch::randint(0, cfg.classes, {a.batch}, torch::TensorOptions(torch::kInt64).device(device));
  // the trainer's step (training/train_step.h): captured in a CUDA graph unless --no-graph or
  // the run cannot be (CPU, recomputed blocks)
  const auto why = a.no_graph ? std::string("--no-graph") : training::graph_unavailable(g, device);
  training::GradientStep gs(g, params, {a.precision == "bf16" && device.is_cuda(), 1.0, why.empty()});
  auto step = [&](int64_t i) {
    gs.run(tokens, labels, training::draw_objective(a.batch, 0, a.batch, scan, 1.0, 0.1, 0, i)).cpu();  // the trainer's read-back
    opt.step(1e-4);
  };
  // the peak counts from before the first step: a captured step allocates its memory at capture
  reset_peak(device);
  const int64_t warmup = 3, timed = a.steps > 0 ? a.steps : 10;
  for (int64_t i = 0; i < warmup; ++i) step(i);
  sync(device);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < timed; ++i) step(warmup + i);
  sync(device);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / timed;
  // 6 · params · positions FLOPs per sequence (forward 2, backward 4), positions = S + 1 fed.
  int64_t n = 0;
  for (auto& p : params) n += p.numel();
  const double flops = 6.0 * static_cast<double>(n) * (cfg.seq_len + 1) * a.batch;
  if (a.header)
    std::printf("| model | batch | precision | ms/step | sequences/s | tokens/s | TFLOP/s | peak GiB |\n"
                "|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %lld | %s | %.0f | %.1f | %.1fk | %.1f | %.1f |\n", a.model.c_str(), (long long)a.batch,
              (a.precision + (a.plain ? " plain" : "") + (gs.graphed() ? " graph" : "") +
               (g->recompute_layers > 0 ? " ckpt " + cat(g->recompute_layers, "/", cfg.layers) : "") +
               (a.dropout != 0.1 ? " dropout " + cat(a.dropout) : ""))
                  .c_str(),
              s * 1e3, a.batch / s, a.batch * cfg.seq_len / s / 1e3, flops / s / 1e12, peak_gib(device));
  if (a.profile > 0) {
    profile_kernels(
        [&] {
          for (int64_t i = 0; i < 2; ++i) step(100 + i);
          sync(device);
        },
        device.is_cuda(), a.profile, a.trace);
  }
}

// A token file with a preset's vocabulary, length and classes: data for throughput and multi-GPU
// runs of `rar train` without a tokenized dataset. Random tokens, or (structured) tokens a model can
// learn: each class has its own template sequence, of which 3/4 of the positions are kept and the
// rest drawn at random - training on it lowers the loss well below log(V), so the gradients carry
// signal (on random tokens they are mostly noise, which Adam turns into steps of size ~lr).
// A generator of a preset with the published initialisation and the MaskGIT-VQGAN tokenizer with
// random weights, as safetensors: models to serve and load-test (`rar serve`) without downloads.
void run_weights(const BenchArgs& a, const std::string& out, const std::string& tokenizer_out) {
  torch::manual_seed(static_cast<uint64_t>(a.seed));
  model::Generator g(model::GeneratorConfig::preset(a.model));
  model::save_generator(out, g);
  std::printf("%s: random %s generator\n", out.c_str(), a.model.c_str());
  if (!tokenizer_out.empty()) {
    model::VQModel vq(model::VQConfig{});
    model::save_vq(tokenizer_out, vq);
    std::printf("%s: random MaskGIT-VQGAN tokenizer\n", tokenizer_out.c_str());
  }
}

void run_tokens(const BenchArgs& a, int64_t count, const std::string& out) {
  check(count > 0, "--count must be > 0");
  auto cfg = model::GeneratorConfig::preset(a.model);
  torch::manual_seed(static_cast<uint64_t>(a.seed));
  auto tokens = torch::randint(0, cfg.codebook, {count, cfg.seq_len}, torch::kInt64);
  auto labels = torch::randint(0, cfg.classes, {count}, torch::kInt64);
  if (a.structured) {
    auto templates = torch::randint(0, cfg.codebook, {cfg.classes, cfg.seq_len}, torch::kInt64);
    auto keep = torch::rand({count, cfg.seq_len}).lt(0.75);
    tokens = torch::where(keep, templates.index_select(0, labels), tokens);
  }
  data::write_token_file(out, tokens, labels, cfg.codebook, cfg.classes);
  std::printf("%s: %lld %s sequences of %lld tokens (codebook %lld, %lld classes)\n", out.c_str(), (long long)count,
              a.structured ? "structured" : "random", (long long)cfg.seq_len, (long long)cfg.codebook,
              (long long)cfg.classes);
}

void add_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks with random weights (one markdown row per run)");
  bench->require_subcommand(1);
  auto a = std::make_shared<BenchArgs>();
  auto common = [&](CLI::App* c) {
    c->add_option("--batch", a->batch, "images per batch")->check(positive_count());
    c->add_option("--precision", a->precision, "fp32, tf32, bf16 or fp16");
    c->add_option("--device", a->device, "auto, cpu, cuda or cuda:N");
    c->add_option("--repeats", a->repeats, "timed runs after one warm-up")->check(positive_count());
    c->add_flag("!--no-header", a->header, "omit the table header");
    c->add_option("--profile", a->profile, "also profile one run and print the top N kernels by time")->check(count());
    c->add_option("--trace", a->trace, "with --profile: save a Chrome trace (.json) too");
  };
  // what `sample` and `attention` share: the model, guidance (two rows per image) and the KV cache
  auto decode_step = [&](CLI::App* c) {
    c->add_option("--model", a->model, "rar_b, rar_l, rar_xl or rar_xxl");
    c->add_option("--cfg", a->cfg, "guidance scale (0 = off: one row per image instead of two)")->check(non_negative());
    c->add_option("--kv-cache", a->kv_cache, "KV cache dtype: model or fp8");
    c->add_option("--attention-kernel", a->attention, "decode-attention kernel on CUDA: auto (default: split for one guided image's step, warp above), warp (bf16), block or split (8 warps per row and head; bench sample only)");
  };
  auto* s = bench->add_subcommand("sample", "Token generation (and decoding with --decode)");
  common(s);
  decode_step(s);
  s->add_option("--steps", a->steps, "generate only this many tokens per image (0 = all)")->check(count());
  s->add_flag("--decode", a->decode, "also time tokens -> 256x256 images with MaskGIT-VQGAN");
  s->add_option("--engine", a->engine, "plain, static, graph or auto (graph on CUDA builds)");
  s->add_flag("--channels-last", a->channels_last, "with --decode: NHWC decoder");
  s->add_option("--decode-batch", a->decode_batch, "with --decode: images decoded at once")->check(positive_count());
  s->add_option("--speculative", a->speculative,
                 "speculative Jacobi decoding, W positions per call (prints tokens per call; use --generator for a "
                 "trained model's: random weights keep drafts as their own distributions allow)")->check(count());
  s->add_option("--generator", a->generator, "a trained generator instead of --model's random weights");
  s->add_option("--distinct-classes", a->distinct, "K classes per batch, each repeated (0 = random classes)")->check(count());
  s->callback([a] { run_sample(*a); });
  auto* at = bench->add_subcommand("attention", "One decode step's attention over a filled KV cache (the kernel alone)");
  common(at);
  decode_step(at);
  at->add_option("--fill", a->fill, "filled cache slots (0 = half of the S + 1)")->check(count());
  at->callback([a] { run_attention(*a); });
  auto* d = bench->add_subcommand("decode", "MaskGIT-VQGAN decoding of 16x16 tokens to 256x256 images");
  d->add_flag("--channels-last", a->channels_last, "NHWC convolution weights and activations");
  common(d);
  d->callback([a] { run_decode(*a); });
  auto* w = bench->add_subcommand("weights", "A random generator of a preset (and a random tokenizer) as safetensors");
  w->add_option("--model", a->model, "rar_b, rar_l, rar_xl or rar_xxl");
  w->add_option("--seed", a->seed, "random seed")->check(count());
  w->add_option("--out", a->out, "generator .safetensors")->required();
  auto tok_out = std::make_shared<std::string>();
  w->add_option("--tokenizer-out", *tok_out, "also a random MaskGIT-VQGAN tokenizer here");
  w->callback([a, tok_out] { run_weights(*a, a->out, *tok_out); });
  auto* k = bench->add_subcommand("tokens", "A .rartok file of random sequences (data for throughput / multi-GPU runs)");
  k->add_option("--model", a->model, "preset giving vocabulary, length and classes: rar_b, rar_l, rar_xl, rar_xxl");
  k->add_option("--count", a->count, "sequences")->check(positive_count());
  k->add_option("--seed", a->seed, "random seed")->check(count());
  k->add_flag("--structured", a->structured, "per-class template sequences, 1/4 of positions random (learnable)");
  k->add_option("--out", a->out, "output .rartok")->required();
  k->callback([a] { run_tokens(*a, a->count, a->out); });
  auto* t = bench->add_subcommand("train", "Training steps (forward, backward, clipping, AdamW), r = 1, random tokens");
  common(t);
  t->add_option("--model", a->model, "rar_b, rar_l, rar_xl or rar_xxl");
  t->add_option("--steps", a->steps, "timed steps after 3 warm-up steps (default 10)")->check(positive_count());
  t->add_flag("--checkpoint", a->checkpoint, "activation checkpointing of every block");
  t->add_option("--checkpoint-layers", a->checkpoint_layers, "recompute the activations of the first N blocks in backward (activation checkpointing)")
      ->check(CLI::NonNegativeNumber);
  t->add_flag("--plain", a->plain, "plain LibTorch ops only (no fused CUDA kernels)");
  t->add_flag("--no-graph", a->no_graph, "run each step eagerly (by default a CUDA run without recomputed blocks replays a captured step)");
  t->add_option("--dropout", a->dropout, "dropout and attention dropout (the recipe's 0.1 by default)")->check(non_negative());
  t->callback([a] { run_train(*a); });
}

}  // namespace rar::cli
