// run_options.h — the options `rar train` and `rar train-tokenizer` share, and how they become the
// run's config: defaults <- --config file <- the command's own options <- these <- key=value
// overrides (training/config.h compose_config). The time budget and interruptions follow
// training/training_run.h.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "sampling/sampler.h"
#include "training/config.h"
#include "training/training_run.h"

namespace rar::cli {

struct RunOptions {
  std::string config, out, device;
  int64_t steps = 0, stop_after = 0;
  double minutes = -1;
  bool resume = false, print_config = false;
  std::vector<std::string> overrides;
  training::RunControl control() const { return {resume, stop_after}; }
};

// --config, --out, --device, --steps, --minutes, --stop-after, --resume, --print-config and the
// positional key=value overrides (`overrides_example` shows one in --help).
void add_run_options(CLI::App* cmd, RunOptions& o, const std::string& overrides_example);

// The flags `rar sample` and `rar serve` share, one definition each (the same names, defaults and
// help): --device, --precision, --decode-precision, and of `o` --engine, --kv-cache,
// --attention-kernel, --order, --speculative.
struct GenerationFlags {
  std::string device = "auto", precision = "auto", decode_precision = "auto";
};
void add_generation_flags(CLI::App* cmd, GenerationFlags& f, sampling::SamplingOptions& o);

// The effective config: `defaults` <- o.config <- `own` (the command's own options as overrides) <-
// o's options <- o.overrides. With --print-config it prints it and returns nothing.
std::optional<training::Config> compose_run_config(const char* defaults, const RunOptions& o,
                                                   std::vector<std::string> own);

}  // namespace rar::cli
