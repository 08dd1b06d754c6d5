#include "model/weights.h"

#include <set>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "util/error.h"

namespace rar::model {
namespace {

std::string list(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 5; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > 5) s += cat(" (+", names.size() - 5, " more)");
  return s;
}

}  // namespace

void load_weights(torch::nn::Module& module, const io::StateDict& sd, const std::string& what) {
  auto params = module.named_parameters(/*recurse=*/true);
  auto buffers = module.named_buffers(/*recurse=*/true);
  std::vector<std::string> missing, unexpected, wrong;
  std::set<std::string> known;
  auto visit = [&](const std::string& name, torch::Tensor& dst) {
    known.insert(name);
    if (!sd.has(name)) return missing.push_back(name);
    const auto& src = sd.at(name);
    if (src.sizes() != dst.sizes()) return wrong.push_back(cat(name, " ", src.sizes(), " (expected ", dst.sizes(), ")"));
    if (!src.is_floating_point() && dst.is_floating_point())
      wrong.push_back(cat(name, " of type ", c10::toString(src.scalar_type()), " (expected floating point)"));
  };
  for (auto& p : params) visit(p.key(), p.value());
  for (auto& b : buffers) visit(b.key(), b.value());
  for (const auto& n : sd.names())
    if (!known.count(n)) unexpected.push_back(n);
  if (!missing.empty() || !unexpected.empty() || !wrong.empty()) {
    std::string msg = what + ": state dict does not match the model:";
    if (!missing.empty()) msg += cat(" missing ", missing.size(), ": ", list(missing), ";");
    if (!unexpected.empty()) msg += cat(" unexpected ", unexpected.size(), ": ", list(unexpected), ";");
    if (!wrong.empty()) msg += cat(" wrong shape/type: ", list(wrong), ";");
    msg.pop_back();
    fail(msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& p : params) p.value().copy_(sd.at(p.key()));
  for (auto& b : buffers) b.value().copy_(sd.at(b.key()));
}

void load_into(torch::nn::Module& module, const io::StateDict& sd, const torch::Device& device,
               torch::ScalarType dtype) {
  load_weights(module, sd, sd.source);
  module.to(device, dtype);
  module.eval();
}

std::optional<nlohmann::json> metadata_json(const io::StateDict& sd, const std::string& key) {
  auto it = sd.metadata.find(key);
  if (it == sd.metadata.end()) return std::nullopt;
  auto j = nlohmann::json::parse(it->second, nullptr, false);
  check(!j.is_discarded(), sd.source, ": metadata '", key, "' is not valid JSON");
  return j;
}

io::StateDict state_dict_of(const torch::nn::Module& module) {
  io::StateDict sd;
  for (auto& p : module.named_parameters(true)) sd.set(p.key(), p.value().detach());
  for (auto& b : module.named_buffers(true)) sd.set(b.key(), b.value().detach());
  return sd;
}

LoadedGenerator load_generator(const std::string& path, const torch::Device& device, torch::ScalarType dtype) {
  io::StateDict sd = io::read_checkpoint(path);
  check(is_generator_state_dict(sd), path, ": not a RAR generator checkpoint (no lm_head.weight / pos_embed / ",
        "target_aware_pos_embed / blocks.0.attn.qkv.weight)");
  LoadedGenerator g;
  g.cfg = GeneratorConfig::infer(sd);
  if (auto j = metadata_json(sd, kGeneratorConfigKey)) {
    auto meta = GeneratorConfig::from_json(*j);
    check(meta.hidden == g.cfg.hidden && meta.layers == g.cfg.layers && meta.heads == g.cfg.heads &&
              meta.mlp == g.cfg.mlp && meta.codebook == g.cfg.codebook && meta.classes == g.cfg.classes &&
              meta.seq_len == g.cfg.seq_len,
          path, ": metadata config disagrees with the tensor shapes");
    g.cfg = meta;  // keeps the dropout rates
  }
  g.model = Generator(g.cfg);
  load_into(*g.model, sd, device, dtype);
  g.sampling = sampling_defaults(sd, g.cfg);
  return g;
}

std::optional<SamplingDefaults> sampling_defaults(const io::StateDict& sd, const GeneratorConfig& cfg) {
  if (auto j = metadata_json(sd, kSamplingKey)) return SamplingDefaults::from_json(*j, "its training config's");
  return published_sampling(cfg);
}

void save_generator(const std::string& path, Generator& model, const std::optional<SamplingDefaults>& sampling) {
  io::StateDict sd = state_dict_of(*model);
  sd.metadata[kGeneratorConfigKey] = model->cfg.to_json().dump();
  if (sampling) sd.metadata[kSamplingKey] = sampling->to_json().dump();
  sd.metadata["format"] = "pt";
  io::write_safetensors(path, sd);
}

}  // namespace rar::model
