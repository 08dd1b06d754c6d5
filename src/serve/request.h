// request.h — the body of POST /v1/generate, checked field by field (rar serve):
//   {"classes": [int, ...] | "class": int, "n": int, "cfg": float, "cfg_power": float,
//    "cfg_schedule": "pow-cosine" | "linear" | "constant", "temperature": float, "top_k": int,
//    "top_p": float, "seed": int}
// "class" (or each entry of "classes") is generated n times (default 1), so a request asks for
// len(classes)·n images; every other field defaults as in `rar sample` with the same generator
// (cfg, cfg_power and temperature: the generator's own settings, RequestLimits::sampling). Unknown
// fields, wrong types and out-of-range values are a rar::Error naming the field (the server
// answers 400).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "sampling/sampler.h"

namespace rar::serve {

struct GenerateRequest {
  std::vector<int64_t> classes;  // one entry per image, in order
  sampling::SamplingOptions opts;
  std::string schedule = "pow-cosine";
};

struct RequestLimits {
  int64_t num_classes = 1000;
  int64_t max_images = 64;
  size_t max_body_bytes = 64 * 1024;
  sampling::SamplingOptions sampling;  // the defaults of the sampling fields
};

GenerateRequest parse_generate_request(const std::string& body, const RequestLimits& limits);

}  // namespace rar::serve
