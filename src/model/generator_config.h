// generator_config.h — the shape of a RAR generator (DESIGN §1–2): hidden size H, blocks L, heads,
// MLP width I, codebook V, classes C, image tokens S. Presets are the published models; any other
// combination is allowed, and the config of a checkpoint is recovered from its tensor shapes.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/state_dict.h"

namespace rar::model {

struct GeneratorConfig {
  int64_t hidden = 768;      // H
  int64_t layers = 24;       // L
  int64_t heads = 16;        // head dim = H / heads
  int64_t mlp = 3072;        // I
  int64_t codebook = 1024;   // V
  int64_t classes = 1000;    // C
  int64_t seq_len = 256;     // S (16x16 tokens)
  double dropout = 0.1;      // projections / MLP, training only
  double attn_dropout = 0.1; // attention weights, training only

  int64_t head_dim() const { return hidden / heads; }
  // Token-space layout (DESIGN §1): image tokens 0..V-1, mask V, class c -> V+1+c, null V+C+1.
  int64_t vocab_rows() const { return codebook + classes + 2; }
  int64_t class_token(int64_t c) const { return codebook + 1 + c; }
  int64_t null_class_token() const { return codebook + classes + 1; }
  int64_t pos_rows() const { return seq_len + 1024; }
  int64_t timestep_rows() const { return seq_len + 100; }

  // Exact number of parameters this config instantiates.
  int64_t parameter_count() const;
  void validate() const;  // throws rar::Error on inconsistent sizes

  nlohmann::json to_json() const;
  static GeneratorConfig from_json(const nlohmann::json& j);
  // "rar_b", "rar_l", "rar_xl", "rar_xxl".
  static GeneratorConfig preset(const std::string& name);
  static std::vector<std::string> preset_names();
  // Recovers every size from the tensor shapes (DESIGN §2). Throws naming what is missing.
  static GeneratorConfig infer(const io::StateDict& sd);
};

// True when the state dict looks like a RAR generator (has the generator's characteristic keys).
bool is_generator_state_dict(const io::StateDict& sd);

// How a generator is meant to be sampled: guidance g, the pow-cosine power p, the temperature.
struct SamplingDefaults {
  double cfg = 4.0, cfg_power = 0.0, temperature = 1.0;
  std::string source;  // where they come from: "published rar_xl", "its training config"
  nlohmann::json to_json() const;  // {"guidance_scale", "guidance_scale_pow", "randomize_temperature"} (rar.yaml's names)
  static SamplingDefaults from_json(const nlohmann::json& j, const std::string& source);
};
// The published models' settings (the RAR README's table) for a config of a published preset's
// shape (its H, L, I, heads, 1024 codes, 1000 classes, 256 tokens); nothing for any other shape.
std::optional<SamplingDefaults> published_sampling(const GeneratorConfig& c);

}  // namespace rar::model
