// `rar bench sample | attention | decode | train` — speed with random weights (src/bench/), one
// markdown table row per run; `rar bench weights | tokens | inception | images` — the fixtures
// those runs and load tests read (bench/fixtures.h).
#include "bench/fixtures.h"
#include "bench/sampling_bench.h"
#include "bench/training_bench.h"
#include "cli/commands.h"

namespace rar::cli {

namespace {

// The options every timed benchmark has, into `run`.
void add_run_options(CLI::App* c, bench::BenchRun& run) {
  c->add_option("--batch", run.batch, "images (sequences) per batch")->check(positive_count());
  c->add_option("--precision", run.precision, "fp32, tf32, bf16 or fp16");
  c->add_option("--device", run.device, "auto, cpu, cuda or cuda:N");
  c->add_option("--repeats", run.repeats, "timed runs after one warm-up")->check(positive_count());
  c->add_flag("!--no-header", run.header, "omit the table header");
  c->add_option("--profile", run.profile, "also profile one run and print the top N kernels by time")->check(count());
  c->add_option("--trace", run.trace, "with --profile: save a Chrome trace (.json) too");
}

const char* kPresets = "preset: rar_b, rar_l, rar_xl or rar_xxl (--model: the same)";

}  // namespace

void add_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks with random weights (one markdown row per run), and their fixtures");
  bench->require_subcommand(1);

  auto sb = std::make_shared<bench::SampleBench>();
  sb->sampling.cfg = 4.0;
  auto* s = bench->add_subcommand("sample", "Token generation (and decoding with --decode)");
  add_run_options(s, sb->run);
  s->add_option("--preset,--model", sb->preset, kPresets);
  s->add_option("--generator", sb->generator, "a trained generator instead of the preset's random weights");
  s->add_option("--cfg", sb->sampling.cfg, "guidance scale (0 = off: one row per image instead of two)")->check(non_negative());
  s->add_option("--kv-cache", sb->sampling.kv_cache, "KV cache dtype: model or fp8");
  s->add_option("--attention-kernel", sb->sampling.attention_kernel,
                "decode-attention kernel on CUDA: auto (split for one guided image's step, warp above), warp, block or split");
  s->add_option("--tokens,--steps", sb->sampling.steps, "generate only this many tokens per image (0 = all)")->check(count());
  s->add_option("--engine", sb->sampling.engine, "plain, static, graph or auto (graph on CUDA builds)");
  s->add_option("--speculative", sb->sampling.speculative,
                "speculative Jacobi decoding, W positions per call (prints tokens per call; use --generator for a "
                "trained model's: random weights keep drafts as their own distributions allow)")->check(count());
  s->add_option("--distinct-classes", sb->distinct_classes, "K classes per batch, each repeated (0 = random classes)")->check(count());
  s->add_flag("--decode", sb->decode, "also time tokens -> 256x256 images with MaskGIT-VQGAN");
  s->add_option("--decode-batch", sb->decode_batch, "with --decode: images decoded at once")->check(positive_count());
  s->add_flag("--channels-last", sb->channels_last, "with --decode: NHWC decoder");
  s->callback([sb] { bench::bench_sample(*sb); });

  auto ab = std::make_shared<bench::AttentionBench>();
  auto* at = bench->add_subcommand("attention", "One decode step's attention over a filled KV cache (the kernel alone)");
  add_run_options(at, ab->run);
  at->add_option("--preset,--model", ab->preset, kPresets);
  at->add_option("--cfg", ab->cfg, "guidance scale (0 = off: one row per image instead of two)")->check(non_negative());
  at->add_option("--kv-cache", ab->kv_cache, "KV cache dtype: model or fp8");
  at->add_option("--attention-kernel", ab->kernel, "warp or block (split runs inside a step: bench sample)");
  at->add_option("--fill", ab->fill, "filled cache slots (0 = half of the S + 1)")->check(count());
  at->callback([ab] { bench::bench_attention(*ab); });

  auto db = std::make_shared<bench::DecodeBench>();
  auto* d = bench->add_subcommand("decode", "MaskGIT-VQGAN decoding of 16x16 tokens to 256x256 images");
  add_run_options(d, db->run);
  d->add_flag("--channels-last", db->channels_last, "NHWC convolution weights and activations");
  d->callback([db] { bench::bench_decode(*db); });

  auto tb = std::make_shared<bench::TrainBench>();
  tb->run.batch = 128;
  auto every_block = std::make_shared<bool>(false);
  auto* t = bench->add_subcommand("train", "Training steps (forward, backward, clipping, AdamW), r = 1, random tokens");
  add_run_options(t, tb->run);
  t->add_option("--preset,--model", tb->preset, kPresets);
  t->add_option("--steps", tb->steps, "timed optimizer steps after 3 warm-up steps")->check(positive_count());
  t->add_option("--checkpoint-layers", tb->recompute_layers,
                "recompute the activations of the first N blocks in backward (activation checkpointing)")
      ->check(CLI::NonNegativeNumber);
  t->add_flag("--checkpoint", *every_block, "activation checkpointing of every block");
  t->add_flag("--recompute-mlp", tb->recompute_mlp,
              "every block's MLP recomputes fc1's output in backward instead of keeping it");
  t->add_flag("--plain", tb->plain, "plain LibTorch ops only (no fused CUDA kernels)");
  t->add_flag("--fp8", tb->fp8, "the blocks' products (adaLN, qkv, proj, fc1, fc2) in fp8 (training.fp8)");
  t->add_option("--fp8-scaling", tb->fp8_scaling,
                "with --fp8: delayed (each tensor's largest magnitude over the last 16 steps) or current (its "
                "own; training.fp8_scaling)")
      ->check(CLI::IsMember({"current", "delayed"}));
  t->add_flag("!--no-graph", tb->graph, "run each step eagerly (by default a CUDA run without recomputed blocks replays a captured step)");
  t->add_option("--dropout", tb->dropout, "dropout and attention dropout (the recipe's 0.1)")->check(non_negative());
  t->callback([tb, every_block] {
    if (*every_block) tb->recompute_layers = 1 << 20;  // every block of the preset
    bench::bench_train(*tb);
  });

  // ---------------------------------------------------------------- fixtures
  struct Fixture {
    std::string preset = "rar_b", out, tokenizer_out;
    int64_t seed = 0, count = 10000, size = 256;
    bool structured = false;
  };
  auto fx = std::make_shared<Fixture>();
  auto* w = bench->add_subcommand("weights", "Fixture: a random generator of a preset (and a random tokenizer) as safetensors");
  w->add_option("--preset,--model", fx->preset, kPresets);
  w->add_option("--seed", fx->seed, "random seed")->check(count());
  w->add_option("--out", fx->out, "generator .safetensors")->required();
  w->add_option("--tokenizer-out", fx->tokenizer_out, "also a random MaskGIT-VQGAN tokenizer here");
  w->callback([fx] {
    bench::write_random_generator(fx->out, fx->preset, fx->seed);
    if (!fx->tokenizer_out.empty()) bench::write_random_tokenizer(fx->tokenizer_out, fx->seed);
  });
  auto* k = bench->add_subcommand("tokens", "Fixture: a .rartok file of random sequences (data for throughput / multi-GPU runs)");
  k->add_option("--preset,--model", fx->preset, "preset giving vocabulary, length and classes: rar_b, rar_l, rar_xl, rar_xxl");
  k->add_option("--count", fx->count, "sequences")->check(positive_count());
  k->add_option("--seed", fx->seed, "random seed")->check(count());
  k->add_flag("--structured", fx->structured, "per-class template sequences, 1/4 of positions random (learnable)");
  k->add_option("--out", fx->out, "output .rartok")->required();
  k->callback([fx] { bench::write_token_fixture(fx->out, fx->preset, fx->count, fx->structured, fx->seed); });
  auto* inc = bench->add_subcommand("inception", "Fixture: the FID Inception network with random weights (for timing rar eval)");
  inc->add_option("--seed", fx->seed, "random seed")->check(count());
  inc->add_option("--out", fx->out, "output .safetensors (rar eval --inception)")->required();
  inc->callback([fx] { bench::write_random_inception(fx->out, fx->seed); });
  auto* im = bench->add_subcommand("images", "Fixture: an ADM-layout .npz of noise images (arr_0, for timing rar eval adm)");
  im->add_option("--count", fx->count, "images")->check(positive_count());
  im->add_option("--size", fx->size, "height and width")->check(positive_count());
  im->add_option("--seed", fx->seed, "random seed")->check(count());
  im->add_option("--out", fx->out, "output .npz")->required();
  im->callback([fx] { bench::write_image_fixture(fx->out, fx->count, fx->size, fx->seed); });
}

}  // namespace rar::cli
