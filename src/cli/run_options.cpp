// run_options.cpp — see run_options.h.
#include "cli/run_options.h"

#include <cstdio>

#include "cli/commands.h"

namespace rar::cli {

void add_run_options(CLI::App* c, RunOptions& o, const std::string& overrides_example) {
  c->add_option("--config", o.config, "YAML config merged over the defaults (see --print-config)");
  c->add_option("--out", o.out, "output folder (experiment.output_dir)");
  c->add_option("--device", o.device, "auto, cpu, cuda or cuda:N (training.device)");
  c->add_option("--steps", o.steps, "optimizer steps (training.max_train_steps)")->check(positive_count());
  c->add_option("--minutes", o.minutes,
                "time budget: after this wall time, checkpoint and finish like the end of the schedule "
                "(final evaluation); --resume continues (training.max_minutes)")
      ->check(non_negative());
  c->add_option("--stop-after", o.stop_after, "train this many steps now, checkpoint and exit (then --resume)")
      ->check(count());
  c->add_flag("--resume", o.resume, "continue from the newest checkpoint in the output folder");
  c->add_flag("--print-config", o.print_config, "print the effective config and exit");
  c->add_option("overrides", o.overrides, "key.path=value overrides, e.g. " + overrides_example);
}

std::optional<training::Config> compose_run_config(const char* defaults, const RunOptions& o,
                                                   std::vector<std::string> ov) {
  if (!o.out.empty()) ov.push_back("experiment.output_dir=" + o.out);
  if (!o.device.empty()) ov.push_back("training.device=" + o.device);
  if (o.steps > 0) ov.push_back("training.max_train_steps=" + std::to_string(o.steps));
  if (o.minutes >= 0) ov.push_back("training.max_minutes=" + std::to_string(o.minutes));
  ov.insert(ov.end(), o.overrides.begin(), o.overrides.end());
  auto cfg = training::compose_config(defaults, o.config, ov);
  if (o.print_config) {
    std::fputs(cfg.to_yaml().c_str(), stdout);
    return std::nullopt;
  }
  return cfg;
}

void add_generation_flags(CLI::App* cmd, GenerationFlags& f, sampling::SamplingOptions& o) {
  cmd->add_option("--device", f.device, "auto, cpu, cuda or cuda:N");
  cmd->add_option("--precision", f.precision,
                  "generator: auto (bf16 on CUDA, fp32 on the CPU; rar sample and rar serve alike), fp32, tf32 or bf16");
  cmd->add_option("--decode-precision", f.decode_precision,
                  "decoder: auto (bf16 on CUDA, fp32 on the CPU; rar sample and rar serve alike), fp32 or bf16");
  cmd->add_option("--engine", o.engine,
                  "plain (the KV-cache loop), static (fixed shapes), graph (static, captured in a CUDA graph) or auto");
  cmd->add_option("--kv-cache", o.kv_cache,
                  "KV cache dtype: model (exact) or fp8 (e4m3, half the memory traffic of a step; approximate)");
  cmd->add_option("--attention-kernel", o.attention_kernel,
                  "decode-attention kernel on CUDA: auto (split for one guided image's step, warp above), warp, split or block");
  cmd->add_option("--order", o.order, "scan order: raster, spiral-in, spiral-out, z-curve, subsample, alternate");
  cmd->add_option("--speculative", o.speculative,
                  "speculative Jacobi decoding with W positions per model call (fewer calls for small batches; "
                  "the same distribution, other tokens for a seed; 0 = off)")->check(count());
}

}  // namespace rar::cli
