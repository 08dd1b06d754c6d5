// training_bench.h — `rar bench train`: training steps as ../shared/BASELINES.md measures the
// published code — forward, backward, clipping and AdamW, every sequence permuted (r = 1), label
// dropout 0.1, random tokens, bf16 autocast (or fp32/tf32) — through the trainer's own step
// (training/train_step.h). One markdown row: ms/step, sequences/s, TFLOP/s, peak GPU memory.
#pragma once
#include <cstdint>
#include <string>

#include "bench/sampling_bench.h"

namespace rar::bench {

struct TrainBench {
  BenchRun run;              // run.precision: bf16 (autocast), tf32 or fp32
  std::string preset = "rar_b";
  int64_t steps = 10;        // timed optimizer steps, after 3 warm-up steps
  int64_t recompute_layers = 0;  // activation checkpointing of the first N blocks
  bool recompute_mlp = false;    // every block's MLP recomputes fc1's output in backward
  bool plain = false;        // plain LibTorch ops only (no fused CUDA kernels)
  bool fp8 = false;          // the blocks' products (adaLN, qkv, proj, fc1, fc2) in fp8 (training.fp8)
  std::string fp8_scaling = "delayed";  // or current (training.fp8_scaling; delayed: 16 steps of history)
  bool graph = true;         // replay a captured step where the run allows it (CUDA, nothing recomputed)
  double dropout = 0.1;      // dropout and attention dropout (the recipe's 0.1)
};
void bench_train(const TrainBench& b);

}  // namespace rar::bench
