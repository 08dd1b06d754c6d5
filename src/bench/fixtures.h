// fixtures.h — files with random contents in the formats `rar` reads, for benchmarks, load tests
// and multi-GPU runs without downloads (`rar bench weights | tokens | inception | images`). Speed
// does not depend on the values, so a benchmark on these files times what a user's files cost.
#pragma once
#include <cstdint>
#include <string>

namespace rar::bench {

// A generator of a preset with the published initialisation, as safetensors.
void write_random_generator(const std::string& path, const std::string& preset, int64_t seed);
// The MaskGIT-VQGAN tokenizer with random weights, as safetensors.
void write_random_tokenizer(const std::string& path, int64_t seed);
// A .rartok file of `count` sequences with a preset's vocabulary, length and classes: random
// tokens, or (structured) tokens a model can learn — each class has its own template sequence, of
// which 3/4 of the positions are kept and the rest drawn at random (training on it lowers the loss
// well below log(V), so the gradients carry signal; on random tokens they are mostly noise, which
// Adam turns into steps of size ~lr).
void write_token_fixture(const std::string& path, const std::string& preset, int64_t count, bool structured,
                         int64_t seed);
// The FID Inception network with random weights under pytorch-fid's key names (eval/inception.h),
// as safetensors: what `rar eval --inception` loads.
void write_random_inception(const std::string& path, int64_t seed);
// An ADM-layout batch (`arr_0` uint8 [count, size, size, 3], `rar eval adm`'s input) of noise
// images, as one .npz (made in memory: 50,000 images of 256² take 9.8 GB).
void write_image_fixture(const std::string& path, int64_t count, int64_t size, int64_t seed);

}  // namespace rar::bench
