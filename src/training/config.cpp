// config.cpp — see config.h. yaml-cpp parses; scalars are typed here by the YAML 1.2 core rules
// plus underscores in numbers and exponent-only floats, as the published configs need.
#include "training/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <regex>
#include <set>

#include "util/atomic_file.h"
#include "util/error.h"

namespace rar::training {
namespace {

using json = nlohmann::json;

json scalar_value(const std::string& raw, bool quoted) {
  if (quoted) return raw;
  if (raw.empty() || raw == "~" || raw == "null" || raw == "Null" || raw == "NULL") return nullptr;
  if (raw == "true" || raw == "True" || raw == "TRUE") return true;
  if (raw == "false" || raw == "False" || raw == "FALSE") return false;
  static const std::regex int_re(R"([-+]?[0-9][0-9_]*)");
  static const std::regex float_re(R"([-+]?([0-9][0-9_]*)?(\.[0-9_]*)?([eE][-+]?[0-9]+)?)");
  std::string s;
  for (char c : raw)
    if (c != '_') s += c;
  if (std::regex_match(raw, int_re)) {
    try {
      return static_cast<int64_t>(std::stoll(s));
    } catch (...) {
    }
  }
  if (std::regex_match(raw, float_re) && s.find_first_of("0123456789") != std::string::npos) return std::stod(s);
  if (raw == ".inf" || raw == "+.inf") return INFINITY;
  if (raw == "-.inf") return -INFINITY;
  if (raw == ".nan") return NAN;
  return raw;
}

json from_node(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = from_node(kv.second);
      return o;
    }
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& v : n) a.push_back(from_node(v));
      return a;
    }
    case YAML::NodeType::Scalar:
      return scalar_value(n.Scalar(), n.Tag() == "!");
    default:
      return nullptr;
  }
}

void emit(YAML::Emitter& out, const json& v) {
  if (v.is_object()) {
    out << YAML::BeginMap;
    for (auto it = v.begin(); it != v.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      emit(out, it.value());
    }
    out << YAML::EndMap;
  } else if (v.is_array()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& e : v) emit(out, e);
    out << YAML::EndSeq;
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    // Quote strings that would read back as another type.
    if (!scalar_value(s, false).is_string()) out << YAML::DoubleQuoted << s;
    else out << s;
  } else if (v.is_boolean()) {
    out << (v.get<bool>() ? "true" : "false");
  } else if (v.is_null()) {
    out << YAML::Null;
  } else if (v.is_number_integer()) {
    out << v.get<int64_t>();
  } else {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v.get<double>());
    std::string s = buf;
    if (s.find_first_of(".en") == std::string::npos) s += ".0";  // stays a float when read back
    out << s;
  }
}

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  size_t b = 0;
  for (size_t e; (e = key.find('.', b)) != std::string::npos; b = e + 1) parts.push_back(key.substr(b, e - b));
  parts.push_back(key.substr(b));
  for (auto& p : parts) check(!p.empty(), "config key '", key, "' has an empty part");
  return parts;
}

void merge_into(json& base, const json& over, const std::string& prefix, std::vector<std::string>& added) {
  for (auto it = over.begin(); it != over.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (!base.contains(it.key())) {
      added.push_back(key);
      base[it.key()] = it.value();
    } else if (base[it.key()].is_object() && it.value().is_object()) {
      merge_into(base[it.key()], it.value(), key, added);
    } else {
      base[it.key()] = it.value();
    }
  }
}

}  // namespace

Config Config::from_yaml(const std::string& text, const std::string& source) {
  Config c;
  c.source = source;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(source, ": not valid YAML: ", e.what());
  }
  if (root.IsNull()) return c;
  check(root.IsMap(), source, ": expected a mapping of sections (model:, training:, ...) at the top level");
  c.tree = from_node(root);
  return c;
}

Config Config::load(const std::string& path) { return from_yaml(read_file(path), path); }

std::vector<std::string> Config::merge(const Config& over) {
  std::vector<std::string> added;
  merge_into(tree, over.tree, "", added);
  return added;
}

void Config::apply_override(const std::string& assignment) {
  const auto eq = assignment.find('=');
  check(eq != std::string::npos && eq > 0, "override '", assignment, "': expected key.path=value");
  std::string key = assignment.substr(0, eq);
  const bool add = key[0] == '+';
  if (add) key = key.substr(1);
  const std::string text = assignment.substr(eq + 1);
  check(add || has(key), "override '", assignment, "': no key '", key, "' in the config (use +", key,
        "=... to add one)");
  json value;
  try {
    value = from_node(YAML::Load("v: " + text)["v"]);
  } catch (const YAML::Exception& e) {
    fail("override '", assignment, "': value is not valid YAML: ", e.what());
  }
  json* n = &tree;
  auto parts = split_key(key);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    json& next = (*n)[parts[i]];
    if (!next.is_object()) next = json::object();
    n = &next;
  }
  (*n)[parts.back()] = value;
}

bool Config::has(const std::string& key) const {
  const json* n = &tree;
  for (const auto& p : split_key(key)) {
    if (!n->is_object() || !n->contains(p)) return false;
    n = &(*n)[p];
  }
  return true;
}

json Config::resolve(const json& v, int depth) const {
  check(depth < 16, source, ": ${...} references nest too deep (a cycle?)");
  if (v.is_object()) {
    json o = json::object();
    for (auto it = v.begin(); it != v.end(); ++it) o[it.key()] = resolve(it.value(), depth);
    return o;
  }
  if (v.is_array()) {
    json a = json::array();
    for (const auto& e : v) a.push_back(resolve(e, depth));
    return a;
  }
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > 3 && s.compare(0, 2, "${") == 0 && s.back() == '}') {
      const std::string ref = s.substr(2, s.size() - 3);
      check(has(ref), source, ": '", s, "' refers to a key that does not exist");
      const json* n = &tree;
      for (const auto& p : split_key(ref)) n = &(*n)[p];
      return resolve(*n, depth + 1);
    }
  }
  return v;
}

json Config::resolved() const { return resolve(tree, 0); }

const json& Config::node(const std::string& key) const {
  thread_local json last;
  check(has(key), source, ": missing config key '", key, "'");
  const json* n = &tree;
  for (const auto& p : split_key(key)) n = &(*n)[p];
  last = resolve(*n, 0);
  return last;
}

int64_t Config::get_int(const std::string& key) const {
  const json& v = node(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) return static_cast<int64_t>(v.get<double>());
  fail(source, ": config key '", key, "' must be an integer, got ", v.dump());
}

double Config::get_double(const std::string& key) const {
  const json& v = node(key);
  check(v.is_number(), source, ": config key '", key, "' must be a number, got ", v.dump());
  return v.get<double>();
}

bool Config::get_bool(const std::string& key) const {
  const json& v = node(key);
  check(v.is_boolean(), source, ": config key '", key, "' must be true or false, got ", v.dump());
  return v.get<bool>();
}

std::string Config::get_string(const std::string& key) const {
  const json& v = node(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  if (v.is_number() || v.is_boolean()) return v.dump();
  fail(source, ": config key '", key, "' must be a string, got ", v.dump());
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  const json& v = node(key);
  check(v.is_array(), source, ": config key '", key, "' must be a list of integers, got ", v.dump());
  std::vector<int64_t> out;
  for (const auto& e : v) {
    check(e.is_number_integer(), source, ": config key '", key, "' must be a list of integers, got ", v.dump());
    out.push_back(e.get<int64_t>());
  }
  return out;
}

std::string Config::to_yaml() const {
  YAML::Emitter out;
  emit(out, resolved());
  return std::string(out.c_str()) + "\n";
}

Config compose_config(const std::string& defaults_yaml, const std::string& user_path,
                      const std::vector<std::string>& overrides) {
  Config c = Config::from_yaml(defaults_yaml, "<defaults>");
  if (!user_path.empty()) {
    Config user = Config::load(user_path);
    auto unused = c.merge(user);
    c.source = user_path;
    if (!unused.empty()) {
      std::string list;
      for (const auto& k : unused) list += (list.empty() ? "" : ", ") + k;
      std::fprintf(stderr, "config %s: keys this command does not use (kept): %s\n", user_path.c_str(), list.c_str());
    }
  }
  for (const auto& o : overrides) c.apply_override(o);
  c.resolved();  // reports a dangling ${...} now rather than mid-run
  return c;
}

}  // namespace rar::training
