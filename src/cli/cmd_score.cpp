// `rar score` — per-sample mean NLL (nats/token) of token sequences under a generator (DESIGN §3.8).
#include <cstdio>

#include "cli/commands.h"
#include "eval/nll.h"
#include "io/npy.h"
#include "model/weights.h"
#include "util/device.h"
#include "util/error.h"

namespace rar::cli {

void add_score(CLI::App& app) {
  struct Opts {
    std::string generator, tokens, classes, orders, out, device = "auto", precision = "fp32";
    bool null_class = false;
    int64_t batch = 64;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("score", "Mean NLL per token sequence (validation loss; equivalence test)");
  cmd->add_option("--generator", o->generator, "generator checkpoint")->required();
  cmd->add_option("--tokens", o->tokens, "token ids, int [N,S] (.npy, or .npz[:name])")->required();
  cmd->add_option("--classes", o->classes, "class ids, int [N]")->required();
  cmd->add_option("--orders", o->orders, "one permutation of 0..S-1 per row, int [N,S] (default raster)");
  cmd->add_flag("--null-class", o->null_class, "condition on the null class instead of the labels");
  cmd->add_option("--out", o->out, "write the NLLs as float64 [N] .npy");
  cmd->add_option("--batch", o->batch, "sequences per forward pass")->check(positive_count());
  cmd->add_option("--device", o->device, "auto, cpu, cuda or cuda:N");
  cmd->add_option("--precision", o->precision, "fp32 or bf16");
  cmd->callback([o] {
    auto device = parse_device(o->device);
    auto dtype = parse_precision(o->precision);
    auto tokens = io::read_array(o->tokens);
    auto classes = io::read_array(o->classes);
    check(tokens.dim() == 2 && tokens.size(0) > 0, o->tokens, ": expected at least one token sequence [N,S], got shape ",
          tokens.sizes());
    torch::Tensor orders = o->orders.empty() ? torch::Tensor() : io::read_array(o->orders);
    auto g = model::load_generator(o->generator, device, dtype);
    auto nll = eval::sequence_nll(g.model, tokens, classes, orders, o->null_class, o->batch);
    for (int64_t i = 0; i < nll.size(0); ++i) std::printf("%lld\t%.8f\n", (long long)i, nll[i].item<double>());
    std::printf("mean\t%.8f\n", nll.mean().item<double>());
    if (!o->out.empty()) io::write_npy(o->out, nll);
  });
}

}  // namespace rar::cli
