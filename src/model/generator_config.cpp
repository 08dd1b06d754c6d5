#include "model/generator_config.h"

#include <cmath>

#include <set>

#include "util/error.h"
#include "util/parse.h"

namespace rar::model {

int64_t GeneratorConfig::parameter_count() const {
  const int64_t H = hidden, hd = head_dim();
  int64_t per_block = 2 * 2 * H              // norm1, norm2
                      + 3 * H * H + 3 * H    // qkv
                      + 2 * 2 * hd           // q_norm, k_norm
                      + H * H + H            // proj
                      + mlp * H + mlp        // fc1
                      + H * mlp + H          // fc2
                      + 6 * H * H + 6 * H;   // adaLN_modulation
  return H                                   // cls_token
         + vocab_rows() * H                  // embeddings
         + 2 * pos_rows() * H                // pos_embed, target_aware_pos_embed
         + timestep_rows() * H               // timesteps_embeddings
         + layers * per_block                //
         + 2 * H * H + 2 * H                 // adaln_before_head
         + codebook * H + codebook;          // lm_head
}

void GeneratorConfig::validate() const {
  check(hidden > 0 && layers > 0 && heads > 0 && mlp > 0 && codebook > 0 && classes > 0 && seq_len > 0,
        "generator config: every size must be positive");
  check(hidden % heads == 0, "generator config: hidden size ", hidden, " is not divisible by ", heads, " heads");
  check(dropout >= 0 && dropout < 1 && attn_dropout >= 0 && attn_dropout < 1,
        "generator config: dropout rates must be in [0, 1)");
}

nlohmann::json GeneratorConfig::to_json() const {
  return {{"hidden_size", hidden},     {"num_hidden_layers", layers}, {"num_attention_heads", heads},
          {"intermediate_size", mlp},  {"codebook_size", codebook},   {"condition_num_classes", classes},
          {"image_seq_len", seq_len},  {"dropout", dropout},          {"attn_drop", attn_dropout}};
}

GeneratorConfig GeneratorConfig::from_json(const nlohmann::json& j) {
  GeneratorConfig c;
  auto get = [&](const char* key, auto& field) {
    if (!j.contains(key)) return;
    check(j[key].is_number(), "generator config: '", key, "' must be a number");
    field = j[key].get<std::decay_t<decltype(field)>>();
  };
  get("hidden_size", c.hidden);
  get("num_hidden_layers", c.layers);
  get("num_attention_heads", c.heads);
  get("intermediate_size", c.mlp);
  get("codebook_size", c.codebook);
  get("condition_num_classes", c.classes);
  get("image_seq_len", c.seq_len);
  get("dropout", c.dropout);
  get("attn_drop", c.attn_dropout);
  c.validate();
  return c;
}

std::vector<std::string> GeneratorConfig::preset_names() { return {"rar_b", "rar_l", "rar_xl", "rar_xxl"}; }

GeneratorConfig GeneratorConfig::preset(const std::string& name) {
  GeneratorConfig c;
  if (name == "rar_b") c.hidden = 768, c.layers = 24, c.mlp = 3072;
  else if (name == "rar_l") c.hidden = 1024, c.layers = 24, c.mlp = 4096;
  else if (name == "rar_xl") c.hidden = 1280, c.layers = 32, c.mlp = 5120;
  else if (name == "rar_xxl") c.hidden = 1408, c.layers = 40, c.mlp = 6144;
  else fail("unknown generator preset '", name, "' (expected rar_b, rar_l, rar_xl or rar_xxl)");
  return c;
}

nlohmann::json SamplingDefaults::to_json() const {
  return {{"guidance_scale", cfg}, {"guidance_scale_pow", cfg_power}, {"randomize_temperature", temperature}};
}

SamplingDefaults SamplingDefaults::from_json(const nlohmann::json& j, const std::string& source) {
  SamplingDefaults d;
  auto num = [&](const char* k, double& v) {
    if (!j.contains(k)) return;
    check(j.at(k).is_number() && std::isfinite(j.at(k).get<double>()), source, ": sampling setting '", k,
          "' is not a finite number");
    v = j.at(k).get<double>();
  };
  num("guidance_scale", d.cfg);
  num("guidance_scale_pow", d.cfg_power);
  num("randomize_temperature", d.temperature);
  d.source = source;
  return d;
}

std::optional<SamplingDefaults> published_sampling(const GeneratorConfig& c) {
  if (c.codebook != 1024 || c.classes != 1000 || c.seq_len != 256 || c.heads != 16) return std::nullopt;
  // (guidance, power, temperature) of the published RAR-B/L/XL/XXL
  struct Row {
    const char* name;
    double cfg, power, temperature;
  };
  for (const Row& r : {Row{"rar_b", 16.0, 2.75, 1.0}, Row{"rar_l", 15.5, 2.5, 1.02}, Row{"rar_xl", 6.9, 1.5, 1.02},
                       Row{"rar_xxl", 8.0, 1.2, 1.02}}) {
    const auto p = GeneratorConfig::preset(r.name);
    if (p.hidden == c.hidden && p.layers == c.layers && p.mlp == c.mlp) {
      SamplingDefaults d;
      d.cfg = r.cfg, d.cfg_power = r.power, d.temperature = r.temperature;
      d.source = std::string("the published ") + r.name + "'s";
      return d;
    }
  }
  return std::nullopt;
}

bool is_generator_state_dict(const io::StateDict& sd) {
  return sd.has("lm_head.weight") && sd.has("pos_embed") && sd.has("target_aware_pos_embed") &&
         sd.has("blocks.0.attn.qkv.weight");
}

GeneratorConfig GeneratorConfig::infer(const io::StateDict& sd) {
  GeneratorConfig c;
  auto lm = sd.sizes("lm_head.weight", 2);
  c.codebook = lm[0];
  c.hidden = lm[1];
  c.classes = sd.sizes("embeddings.weight", 2)[0] - c.codebook - 2;
  c.seq_len = sd.sizes("pos_embed", 3)[1] - 1024;
  int64_t hd = sd.sizes("blocks.0.attn.q_norm.weight", 1)[0];
  check(hd > 0 && c.hidden % hd == 0, sd.source, ": q_norm width ", hd, " does not divide hidden size ", c.hidden);
  c.heads = c.hidden / hd;
  c.mlp = sd.sizes("blocks.0.mlp.fc1.weight", 2)[0];
  std::set<int64_t> ids;
  for (const auto& n : sd.names())
    if (const int64_t i = index_after(n, "blocks."); i >= 0) ids.insert(i);
  c.layers = static_cast<int64_t>(ids.size());
  check(c.classes > 0, sd.source, ": embeddings.weight has too few rows for codebook ", c.codebook);
  check(c.seq_len > 0, sd.source, ": pos_embed must have more than 1024 rows");
  check(!ids.empty() && *ids.rbegin() == c.layers - 1, sd.source, ": block indices are not 0..L-1");
  c.validate();
  return c;
}

}  // namespace rar::model
