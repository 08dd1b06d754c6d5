// config.cpp — see config.h. yaml-cpp parses; scalars are typed here by the YAML 1.2 core rules
// plus underscores in numbers and exponent-only floats, as the published configs need.
#include "training/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <cctype>
#include <set>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/parse.h"

namespace rar::training {
namespace {

using json = nlohmann::json;

// YAML 1.2 core-schema numbers plus underscores ("250_000") and exponent-only floats ("4e-4"),
// recognised by scanning (linear time; std::regex recursed per character and overflowed the stack
// on long scalars).
bool digits_with_underscores(const std::string& s, size_t& i) {
  const size_t b = i;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || (s[i] == '_' && i > b))) ++i;
  return i > b;
}
bool looks_like_int(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  return digits_with_underscores(s, i) && i == s.size();
}
bool looks_like_float(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  bool mantissa = false;
  if (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) mantissa = digits_with_underscores(s, i);
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '_')) mantissa |= s[i++] != '_';
  }
  if (!mantissa) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    const size_t b = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == b) return false;
  }
  return i == s.size();
}

json scalar_value(const std::string& raw, bool quoted, const std::string& where = "") {
  if (quoted) return raw;
  if (raw.empty() || raw == "~" || raw == "null" || raw == "Null" || raw == "NULL") return nullptr;
  if (raw == "true" || raw == "True" || raw == "TRUE") return true;
  if (raw == "false" || raw == "False" || raw == "FALSE") return false;
  std::string s;
  for (char c : raw)
    if (c != '_') s += c;
  int64_t i = 0;
  if (looks_like_int(raw)) {
    check(parse_int(s, i), where, ": integer '", shorten(raw, 40), "' does not fit in 64 bits");
    return i;
  }
  double d = 0;
  if (looks_like_float(raw) && parse_double(s, d)) return d;
  if (raw == ".inf" || raw == "+.inf" || raw == ".Inf" || raw == "+.Inf") return INFINITY;
  if (raw == "-.inf" || raw == "-.Inf") return -INFINITY;
  if (raw == ".nan" || raw == ".NaN") return NAN;
  return raw;
}

// A YAML document as JSON. Aliases (*a) refer to an anchored node and are expanded here, so a
// small file can describe an enormous tree ("billion laughs"): the expansion is limited.
constexpr int64_t kMaxConfigNodes = 100000;

// A value for an error message: shortened, and bytes that are not UTF-8 replaced (dump() throws on them).
std::string show(const json& v) { return shorten(v.dump(-1, ' ', false, json::error_handler_t::replace)); }
constexpr int kMaxConfigDepth = 64;

json from_node(const YAML::Node& n, const std::string& source, int64_t& budget, int depth, const std::string& key) {
  check(--budget >= 0, source, ": more than ", kMaxConfigNodes, " values once aliases are expanded (not a config)");
  check(depth <= kMaxConfigDepth, source, ": nested more than ", kMaxConfigDepth, " levels deep");
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) {
        check(kv.first.IsScalar(), source, ": mapping keys must be plain scalars");
        const std::string& k = kv.first.Scalar();
        o[k] = from_node(kv.second, source, budget, depth + 1, key.empty() ? k : key + "." + shorten(k, 40));
      }
      return o;
    }
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& v : n) a.push_back(from_node(v, source, budget, depth + 1, key));
      return a;
    }
    case YAML::NodeType::Scalar:
      return scalar_value(n.Scalar(), n.Tag() == "!", key.empty() ? source : source + ": " + key);
    default:
      return nullptr;
  }
}

json from_node(const YAML::Node& n, const std::string& source) {
  int64_t budget = kMaxConfigNodes;
  return from_node(n, source, budget, 0, "");
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
    bool plain = false;
    try {
      plain = scalar_value(s, false).is_string();
    } catch (const Error&) {  // an integer too large: quoted, it reads back as the string it is
    }
    if (!plain) out << YAML::DoubleQuoted << s;
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
  c.tree = from_node(root, source);
  return c;
}

// A training config is a few kilobytes; 16 MiB is generous.
Config Config::load(const std::string& path) { return from_yaml(read_file(path, 16u << 20), path); }

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
    value = from_node(YAML::Load("v: " + text)["v"], "override '" + shorten(assignment) + "'");
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

json Config::resolve(const json& v, int depth, int64_t& budget) const {
  check(depth < 16, source, ": ${...} references nest too deep (a cycle?)");
  check(--budget >= 0, source, ": more than ", kMaxConfigNodes, " values once ${...} references are resolved");
  if (v.is_object()) {
    json o = json::object();
    for (auto it = v.begin(); it != v.end(); ++it) o[it.key()] = resolve(it.value(), depth, budget);
    return o;
  }
  if (v.is_array()) {
    json a = json::array();
    for (const auto& e : v) a.push_back(resolve(e, depth, budget));
    return a;
  }
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > 3 && s.compare(0, 2, "${") == 0 && s.back() == '}') {
      const std::string ref = s.substr(2, s.size() - 3);
      check(has(ref), source, ": '", shorten(s), "' refers to a key that does not exist");
      const json* n = &tree;
      for (const auto& p : split_key(ref)) n = &(*n)[p];
      return resolve(*n, depth + 1, budget);
    }
  }
  return v;
}

json Config::resolve(const json& v) const {
  int64_t budget = kMaxConfigNodes;
  return resolve(v, 0, budget);
}

json Config::resolved() const { return resolve(tree); }

const json& Config::node(const std::string& key) const {
  thread_local json last;
  check(has(key), source, ": missing config key '", key, "'");
  const json* n = &tree;
  for (const auto& p : split_key(key)) n = &(*n)[p];
  last = resolve(*n);
  return last;
}

int64_t Config::get_int(const std::string& key) const {
  const json& v = node(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() && std::fabs(v.get<double>()) < 9.2e18)
    return static_cast<int64_t>(v.get<double>());
  fail(source, ": config key '", key, "' must be an integer, got ", show(v));
}

double Config::get_double(const std::string& key) const {
  const json& v = node(key);
  check(v.is_number(), source, ": config key '", key, "' must be a number, got ", show(v));
  check(std::isfinite(v.get<double>()), source, ": config key '", key, "' must be a finite number, got ",
        v.get<double>());
  return v.get<double>();
}

bool Config::get_bool(const std::string& key) const {
  const json& v = node(key);
  check(v.is_boolean(), source, ": config key '", key, "' must be true or false, got ", show(v));
  return v.get<bool>();
}

std::string Config::get_string(const std::string& key) const {
  const json& v = node(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  if (v.is_number() || v.is_boolean()) return v.dump();
  fail(source, ": config key '", key, "' must be a string, got ", show(v));
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  const json& v = node(key);
  check(v.is_array(), source, ": config key '", key, "' must be a list of integers, got ", show(v));
  std::vector<int64_t> out;
  for (const auto& e : v) {
    check(e.is_number_integer(), source, ": config key '", key, "' must be a list of integers, got ", show(v));
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
