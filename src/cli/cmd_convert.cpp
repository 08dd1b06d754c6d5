// `rar convert IN OUT.safetensors [--dtype keep|fp32|bf16|fp16]` — any checkpoint to safetensors.
// A generator gets its config written into the metadata, so later loads need no inference.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/generator_config.h"
#include "model/weights.h"
#include "util/device.h"
#include "util/error.h"

namespace rar::cli {

void add_convert(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Convert a checkpoint (torch.save zip or safetensors) to safetensors");
  auto in = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("keep");
  cmd->add_option("input", *in, "source checkpoint")->required();
  cmd->add_option("output", *out, "destination .safetensors (written atomically)")->required();
  cmd->add_option("--dtype", *dtype, "floating-point tensors as: keep, fp32, bf16, fp16")
      ->check(CLI::IsMember({"keep", "fp32", "bf16", "fp16"}));
  cmd->callback([=] {
    io::StateDict sd = io::read_checkpoint(*in);
    if (*dtype != "keep") {
      auto type = parse_precision(*dtype);
      for (const auto& n : sd.names())
        if (sd.at(n).is_floating_point()) sd.set(n, sd.at(n).to(type));
    }
    if (model::is_generator_state_dict(sd))
      sd.metadata[model::kGeneratorConfigKey] = model::GeneratorConfig::infer(sd).to_json().dump();
    sd.metadata["format"] = "pt";
    sd.metadata["rar.source"] = *in;
    io::write_safetensors(*out, sd);
    std::printf("wrote %s: %zu tensors, %lld parameters\n", out->c_str(), sd.size(), (long long)sd.numel());
  });
}

}  // namespace rar::cli
