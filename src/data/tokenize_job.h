// tokenize_job.h — `rar tokenize`: a whole image dataset through a VQ tokenizer into the
// pretokenized .rartok file the trainer reads (data/token_file.h), with its class names beside it.
// The work is cut into chunks written as they finish ("<out>.parts/chunk-NNNNNN.npz", with a
// manifest of the settings), so a killed or stopped run resumes where it was and gives the same
// bytes; `max_chunks` stops after that many new chunks. Optional augmentations: horizontal flips
// (2 views per image) or ten crops (10 views).
#pragma once
#include <string>

#include <torch/torch.h>

#include "model/vqgan.h"

namespace rar::data {

struct TokenizeSettings {
  std::string tokenizer;  // the tokenizer's path (recorded in the manifest)
  std::string images;     // dataset spec (data/sources.h)
  std::string out;        // the .rartok file
  std::string precision = "fp32";  // recorded in the manifest
  int64_t size = 0, pad = 0, batch = 32, chunk = 4096, max_chunks = 0;
  bool flip = false, ten_crop = false;
};

// Returns false when max_chunks stopped it before the end (run it again to continue).
bool tokenize_dataset(model::LoadedVQ& vq, const torch::Device& device, const TokenizeSettings& settings);

}  // namespace rar::data
