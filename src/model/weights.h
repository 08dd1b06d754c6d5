// weights.h — moving tensors between modules and state dicts by their names. Loading is strict:
// every parameter and buffer must be present with its exact shape, and nothing else may be in
// the file; a mismatch is one error that lists what is missing, unexpected or mis-shaped.
#pragma once
#include <optional>
#include <string>

#include <torch/torch.h>

#include "io/state_dict.h"
#include "model/generator.h"

namespace rar::model {

void load_weights(torch::nn::Module& module, const io::StateDict& sd, const std::string& what);
// load_weights from sd.source, then move to device/dtype and switch to eval mode.
void load_into(torch::nn::Module& module, const io::StateDict& sd, const torch::Device& device,
               torch::ScalarType dtype);
// The JSON held in metadata entry `key`, if present (rar::Error if it is not valid JSON).
std::optional<nlohmann::json> metadata_json(const io::StateDict& sd, const std::string& key);
io::StateDict state_dict_of(const torch::nn::Module& module);

// Reads a generator from any checkpoint format: the config comes from the safetensors metadata
// ("rar.generator_config") when present, else it is inferred from the tensor shapes.
// `sampling`: how it is meant to be sampled — its own metadata ("rar.sampling", written by `rar
// train` from the config's guidance settings), else the published settings of a published model's
// shape, else nothing.
struct LoadedGenerator {
  GeneratorConfig cfg;
  Generator model{nullptr};
  std::optional<SamplingDefaults> sampling;
};
LoadedGenerator load_generator(const std::string& path, const torch::Device& device = torch::kCPU,
                               torch::ScalarType dtype = torch::kFloat32);

// Saves a generator as safetensors with its config (and how it is meant to be sampled, if given)
// in the metadata (atomic).
void save_generator(const std::string& path, Generator& model, const std::optional<SamplingDefaults>& sampling = {});

constexpr const char* kGeneratorConfigKey = "rar.generator_config";
constexpr const char* kSamplingKey = "rar.sampling";
// The sampling settings a state dict's metadata carries, else the published ones for its config.
std::optional<SamplingDefaults> sampling_defaults(const io::StateDict& sd, const GeneratorConfig& cfg);

}  // namespace rar::model
