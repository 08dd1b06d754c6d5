// `rar convert IN OUT [--dtype keep|fp32|bf16|fp16]` — any checkpoint to safetensors (OUT ends in
// .safetensors: a generator gets its config written into the metadata, so later loads need no
// inference) or to the published code's format (OUT ends in .bin, .pt or .pth: what torch.save
// writes, loadable with torch.load(..., weights_only=True) and load_state_dict(strict=True)).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "util/fs.h"
#include "model/generator_config.h"
#include "model/weights.h"
#include "util/device.h"
#include "util/error.h"

namespace rar::cli {

void add_convert(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Convert a checkpoint (torch.save zip or safetensors) to safetensors or to torch.save's format");
  auto in = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("keep");
  cmd->add_option("input", *in, "source checkpoint")->required();
  cmd->add_option("output", *out, "destination: .safetensors, or .bin/.pt/.pth for PyTorch (written atomically)")->required();
  cmd->add_option("--dtype", *dtype, "floating-point tensors as: keep, fp32, bf16, fp16")
      ->check(CLI::IsMember({"keep", "fp32", "bf16", "fp16"}));
  cmd->callback([=] {
    io::StateDict sd = io::read_checkpoint(*in);
    if (*dtype != "keep") {
      auto type = parse_precision(*dtype);
      for (const auto& n : sd.names())
        if (sd.at(n).is_floating_point()) sd.set(n, sd.at(n).to(type));
    }
    if (has_suffix(*out, ".bin") || has_suffix(*out, ".pt") || has_suffix(*out, ".pth")) {
      io::write_torch_checkpoint(*out, sd);  // the official key names are ours already
      std::printf("wrote %s (torch.save format): %zu tensors, %lld parameters\n", out->c_str(), sd.size(),
                  (long long)sd.numel());
      return;
    }
    check(has_suffix(*out, ".safetensors"), "convert: ", *out, ": expected an output ending in .safetensors, .bin, .pt or .pth");
    if (model::is_generator_state_dict(sd))
      sd.metadata[model::kGeneratorConfigKey] = model::GeneratorConfig::infer(sd).to_json().dump();
    sd.metadata["format"] = "pt";
    sd.metadata["rar.source"] = *in;
    io::write_safetensors(*out, sd);
    std::printf("wrote %s: %zu tensors, %lld parameters\n", out->c_str(), sd.size(), (long long)sd.numel());
  });
}

}  // namespace rar::cli
