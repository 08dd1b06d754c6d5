// request.cpp — see request.h.
#include "serve/request.h"

#include <cmath>
#include <cstdio>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "sampling/guidance.h"
#include "util/error.h"

namespace rar::serve {

namespace {

using json = nlohmann::json;

int64_t get_int(const json& j, const char* field, int64_t lo, int64_t hi) {
  const auto& v = j.at(field);
  check(v.is_number_integer() || v.is_number_unsigned(), "field '", field, "': expected an integer");
  check(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(hi), "field '", field,
        "': must lie in [", lo, ", ", hi, "]");
  const int64_t x = v.get<int64_t>();
  check(x >= lo && x <= hi, "field '", field, "': must lie in [", lo, ", ", hi, "], got ", x);
  return x;
}

double get_number(const json& j, const char* field) {
  const auto& v = j.at(field);
  check(v.is_number(), "field '", field, "': expected a number");
  const double x = v.get<double>();
  check(std::isfinite(x), "field '", field, "': must be finite");
  return x;
}

}  // namespace

GenerateRequest parse_generate_request(const std::string& body, const RequestLimits& limits) {
  check(body.size() <= limits.max_body_bytes, "request body of ", body.size(), " bytes is over the limit of ",
        limits.max_body_bytes);
  // Strict JSON: UTF-8 throughout (the parser checks it) and no field twice (the parser would keep
  // the last silently). The parser's message quotes the input, so its bytes are shown escaped.
  json j;
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  const json::parser_callback_t no_duplicates = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys.emplace_back();
    else if (event == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    else if (event == json::parse_event_t::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return duplicate.empty();
  };
  try {
    j = json::parse(body, no_duplicates);
  } catch (const json::exception& e) {
    std::string shown;
    for (unsigned char c : std::string(e.what()))
      if (c >= 0x20 && c < 0x7f) shown += static_cast<char>(c);
      else {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02x", c);
        shown += hex;
      }
    fail("request body is not valid JSON (", shown, ")");
  }
  if (!duplicate.empty()) {
    std::string shown;
    for (unsigned char c : duplicate) shown += c >= 0x20 && c < 0x7f ? std::string(1, static_cast<char>(c)) : "?";
    fail("field '", shown, "' is given twice");
  }
  check(j.is_object(), "request body: expected a JSON object");
  static const std::set<std::string> known = {"classes", "class",       "n",     "cfg",   "cfg_power",
                                              "cfg_schedule", "temperature", "top_k", "top_p", "seed"};
  for (const auto& item : j.items()) check(known.count(item.key()), "unknown field '", item.key(), "'");

  GenerateRequest r;
  r.opts.cfg = limits.sampling.cfg, r.opts.cfg_power = limits.sampling.cfg_power;
  r.opts.temperature = limits.sampling.temperature;
  const int64_t C = limits.num_classes;
  std::vector<int64_t> listed;
  check(j.contains("classes") != j.contains("class"), "give exactly one of 'class' and 'classes'");
  if (j.contains("class")) {
    listed.push_back(get_int(j, "class", 0, C - 1));
  } else {
    const auto& v = j.at("classes");
    check(v.is_array() && !v.empty(), "field 'classes': expected a non-empty array of class ids");
    check(static_cast<int64_t>(v.size()) <= limits.max_images, "field 'classes': more than ", limits.max_images,
          " images");
    for (const auto& c : v) {
      check(c.is_number_integer() || c.is_number_unsigned(), "field 'classes': expected integers");
      check(!c.is_number_unsigned() || c.get<uint64_t>() < static_cast<uint64_t>(C), "field 'classes': ids lie in [0, ",
            C - 1, "]");
      const int64_t id = c.get<int64_t>();
      check(id >= 0 && id < C, "field 'classes': ids lie in [0, ", C - 1, "], got ", id);
      listed.push_back(id);
    }
  }
  const int64_t n = j.contains("n") ? get_int(j, "n", 1, limits.max_images) : 1;
  check(static_cast<int64_t>(listed.size()) * n <= limits.max_images, "field 'n': ", listed.size(), " x ", n,
        " images is more than the limit of ", limits.max_images);
  for (int64_t c : listed)
    for (int64_t k = 0; k < n; ++k) r.classes.push_back(c);

  auto& o = r.opts;
  if (j.contains("cfg")) o.cfg = get_number(j, "cfg");
  check(o.cfg >= 0, "field 'cfg': must be >= 0");
  if (j.contains("cfg_power")) o.cfg_power = get_number(j, "cfg_power");
  check(o.cfg_power >= 0, "field 'cfg_power': must be >= 0");
  if (j.contains("cfg_schedule")) {
    check(j.at("cfg_schedule").is_string(), "field 'cfg_schedule': expected a string");
    r.schedule = j.at("cfg_schedule").get<std::string>();
    try {
      o.schedule = sampling::parse_guidance_schedule(r.schedule);
    } catch (const Error&) {
      fail("field 'cfg_schedule': expected pow-cosine, linear or constant, got '", r.schedule, "'");
    }
  }
  if (j.contains("temperature")) o.temperature = get_number(j, "temperature");
  check(o.temperature > 0, "field 'temperature': must be > 0");
  if (j.contains("top_k")) o.top_k = get_int(j, "top_k", 0, int64_t(1) << 30);
  if (j.contains("top_p")) o.top_p = get_number(j, "top_p");
  check(o.top_p > 0 && o.top_p <= 1, "field 'top_p': must lie in (0, 1]");
  if (j.contains("seed")) o.seed = static_cast<uint64_t>(get_int(j, "seed", 0, (int64_t(1) << 53)));
  o.validate(/*fields=*/true);  // the ranges the CLI checks (finite in float32 all through sampling)
  return r;
}

}  // namespace rar::serve
