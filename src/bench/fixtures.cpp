// fixtures.cpp — see fixtures.h.
#include "bench/fixtures.h"

#include <cstdio>

#include "data/token_file.h"
#include "eval/inception.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/generator.h"
#include "model/vqgan.h"
#include "model/weights.h"
#include "util/error.h"

namespace rar::bench {

void write_random_generator(const std::string& path, const std::string& preset, int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  model::Generator g(model::GeneratorConfig::preset(preset));
  model::save_generator(path, g);
  std::printf("%s: random %s generator\n", path.c_str(), preset.c_str());
}

void write_random_tokenizer(const std::string& path, int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  model::VQModel vq(model::VQConfig{});
  model::save_vq(path, vq);
  std::printf("%s: random MaskGIT-VQGAN tokenizer\n", path.c_str());
}

void write_token_fixture(const std::string& path, const std::string& preset, int64_t count, bool structured,
                         int64_t seed) {
  check(count > 0, "--count must be > 0");
  const auto cfg = model::GeneratorConfig::preset(preset);
  torch::manual_seed(static_cast<uint64_t>(seed));
  auto tokens = torch::randint(0, cfg.codebook, {count, cfg.seq_len}, torch::kInt64);
  auto labels = torch::randint(0, cfg.classes, {count}, torch::kInt64);
  if (structured) {
    auto templates = torch::randint(0, cfg.codebook, {cfg.classes, cfg.seq_len}, torch::kInt64);
    auto keep = torch::rand({count, cfg.seq_len}).lt(0.75);
    tokens = torch::where(keep, templates.index_select(0, labels), tokens);
  }
  data::write_token_file(path, tokens, labels, cfg.codebook, cfg.classes);
  std::printf("%s: %lld %s sequences of %lld tokens (codebook %lld, %lld classes)\n", path.c_str(), (long long)count,
              structured ? "structured" : "random", (long long)cfg.seq_len, (long long)cfg.codebook,
              (long long)cfg.classes);
}

void write_random_inception(const std::string& path, int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  eval::FidInception net;
  io::write_safetensors(path, model::state_dict_of(*net));
  std::printf("%s: the FID Inception network with random weights\n", path.c_str());
}

void write_image_fixture(const std::string& path, int64_t count, int64_t size, int64_t seed) {
  check(count > 0 && size > 0, "--count and --size must be > 0");
  torch::manual_seed(static_cast<uint64_t>(seed));
  io::write_npz(path, {{"arr_0", torch::randint(0, 256, {count, size, size, 3}, torch::kUInt8)}});
  std::printf("%s: %lld noise images of %lld x %lld (arr_0, the ADM layout)\n", path.c_str(), (long long)count,
              (long long)size, (long long)size);
}

}  // namespace rar::bench
