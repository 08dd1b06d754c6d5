// sampling_bench.h — `rar bench sample | attention | decode`: the speed of generation, of one
// decode step's attention and of MaskGIT-VQGAN decoding, with random weights (speed does not
// depend on the values). Each prints one markdown table row per run (images/s, TFLOP/s, peak GPU
// memory), comparable with ../shared/BASELINES.md and bench/RESULTS.md.
#pragma once
#include <cstdint>
#include <string>

#include "sampling/sampler.h"

namespace rar::bench {

// What every benchmark of this file takes.
struct BenchRun {
  std::string device = "auto", precision = "bf16";
  int64_t batch = 128, repeats = 2;
  bool header = true;   // print the table's header first
  int profile = 0;      // also profile one run: the top N kernels by time
  std::string trace;    // with profile: a Chrome trace here
};

struct SampleBench {
  BenchRun run;
  std::string preset = "rar_b";  // random weights of this preset, or
  std::string generator;         // a trained generator (speculative decoding's gain depends on its distributions)
  sampling::SamplingOptions sampling;  // cfg, engine, kv_cache, speculative, steps, attention_kernel
  int64_t distinct_classes = 0;  // K classes per batch, each repeated (0: random classes)
  bool decode = false;           // also time tokens -> 256x256 images (the end-to-end column)
  int64_t decode_batch = 64;
  bool channels_last = false;    // with decode: the NHWC decoder
};
// Token generation (and decoding): one row; at a batch of at most 8 images also the latency line.
void bench_sample(const SampleBench& b);

struct AttentionBench {
  BenchRun run;
  std::string preset = "rar_b", kv_cache = "model", kernel = "warp";  // warp or block (split runs inside a step only)
  double cfg = 4.0;   // 0: one row per image instead of two
  int64_t fill = 0;   // filled cache slots (0: half of S + 1, the mean over a generation)
};
// One decode step's attention over a filled KV cache: time per call and cache bytes read per second.
void bench_attention(const AttentionBench& b);

struct DecodeBench {
  BenchRun run;
  bool channels_last = false;
};
// MaskGIT-VQGAN decoding of 16x16 tokens to 256x256 images.
void bench_decode(const DecodeBench& b);

// Multiply-adds x2 of generating one image's `steps` tokens (guided: two rows), and of decoding a
// grid x grid token map: the FLOP counts behind the TFLOP/s columns.
double sample_flops(const model::GeneratorConfig& c, int64_t steps, bool guided);

}  // namespace rar::bench
