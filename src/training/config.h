// config.h — training configuration: YAML in the published layout (`model.generator.*`,
// `optimizer.params.*`, `lr_scheduler.*`, `training.*`, `experiment.*`), held as a JSON tree.
//
// Loading follows what the published configs rely on (OmegaConf): numbers may carry underscores
// (`250_000`), `4e-4` is a float, `${optimizer.params.learning_rate}` refers to another key.
// A trainer starts from its built-in defaults, merges the user's file over them (keys it does not
// use are kept and reported once), then applies `key.path=value` overrides from the command line
// (a typo there is an error; `+key=value` adds a new key). The effective config is saved with every
// checkpoint.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace rar::training {

class Config {
 public:
  Config() = default;
  static Config from_yaml(const std::string& text, const std::string& source);
  static Config load(const std::string& path);  // YAML or JSON file

  // Deep-merges `over` into this config (over's values win). Returns the dotted keys of `over`
  // that did not exist here.
  std::vector<std::string> merge(const Config& over);
  // "a.b.c=value": value parsed as a YAML scalar or flow sequence ("[1, 2]").
  void apply_override(const std::string& assignment);

  bool has(const std::string& key) const;
  // Typed access with ${...} references resolved; a missing key or a wrong type is a one-line
  // error naming the key and the config's source.
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t def) const { return has(key) ? get_int(key) : def; }
  double get_double(const std::string& key, double def) const { return has(key) ? get_double(key) : def; }
  bool get_bool(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }
  std::string get_string(const std::string& key, const std::string& def) const {
    return has(key) ? get_string(key) : def;
  }

  // The tree with every ${...} reference replaced by its value.
  nlohmann::json resolved() const;
  std::string to_yaml() const;  // of resolved()

  nlohmann::json tree = nlohmann::json::object();
  std::string source = "<config>";

 private:
  const nlohmann::json& node(const std::string& key) const;  // resolved value at key
  nlohmann::json resolve(const nlohmann::json& v) const;
  nlohmann::json resolve(const nlohmann::json& v, int depth, int64_t& budget) const;
};

// Defaults (YAML text) <- the user's file (when not empty) <- overrides. Keys of the user's file
// that the defaults do not have are kept and listed once on stderr as unused.
Config compose_config(const std::string& defaults_yaml, const std::string& user_path,
                      const std::vector<std::string>& overrides);

}  // namespace rar::training
