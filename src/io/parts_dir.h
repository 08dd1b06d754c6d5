// parts_dir.h — the folder where a long, resumable job (sampling to .npz, tokenizing) keeps its
// finished pieces. A manifest records the job's settings: a rerun with the same settings resumes,
// one with different settings is refused instead of mixing the two.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "util/output_lock.h"

namespace rar::io {

// Creates `dir` (and its manifest.json) or checks that the existing manifest equals `settings`.
// With `lock`, first takes the folder's lock (util/output_lock.h) for the returned object's
// lifetime: a second process on the same output is refused before it touches anything. Every
// process of one sharded job checks the manifest; only one of them locks.
OutputLock open_parts_dir(const std::string& dir, const nlohmann::json& settings, const std::string& output,
                          bool lock = true);

}  // namespace rar::io
