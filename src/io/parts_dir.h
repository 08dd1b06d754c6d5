// parts_dir.h — the folder where a long, resumable job (sampling to .npz, tokenizing) keeps its
// finished pieces. A manifest records the job's settings: a rerun with the same settings resumes,
// one with different settings is refused instead of mixing the two.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace rar::io {

// Creates `dir` (and its manifest.json) or checks that the existing manifest equals `settings`.
void open_parts_dir(const std::string& dir, const nlohmann::json& settings);

}  // namespace rar::io
