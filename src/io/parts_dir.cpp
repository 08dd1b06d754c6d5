#include "io/parts_dir.h"

#include <map>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {

namespace {
// Every leaf of a JSON value under its dotted key, as compact text.
void flatten(const nlohmann::json& j, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (j.is_object() && !j.empty()) {
    for (const auto& [k, v] : j.items()) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
    return;
  }
  out[prefix] = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

OutputLock open_parts_dir(const std::string& dir, const nlohmann::json& settings, const std::string& output,
                          bool lock) {
  check(!path_exists(dir) || is_directory(dir), dir, ": expected the folder of ", output, "'s pieces, found a file");
  make_dirs(dir);
  OutputLock held = lock ? OutputLock(join_path(dir, ".lock"), output) : OutputLock();
  const std::string manifest = join_path(dir, "manifest.json");
  // Paths may hold bytes that are not UTF-8: replaced in the text, compared as text.
  const auto text = [](const nlohmann::json& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace); };
  if (!path_exists(manifest)) {
    write_file_atomic(manifest, text(settings));
    return held;
  }
  auto old = nlohmann::json::parse(read_file(manifest, 1 << 20), nullptr, false);
  check(!old.is_discarded(), manifest, ": damaged (not JSON); remove ", dir, " to start the run again");
  if (text(old) == text(settings)) return held;
  // name what differs (a default that changed between versions shows up here too)
  std::map<std::string, std::string> a, b;
  flatten(old, "", a);
  flatten(settings, "", b);
  for (const auto& [k, v] : b) a.emplace(k, "(absent)");
  for (const auto& [k, v] : a) b.emplace(k, "(absent)");
  std::string what;
  int listed = 0;
  for (const auto& [k, v] : a)
    if (v != b[k] && listed < 4) what += std::string(listed++ ? "; " : " (") + k + ": " + v + " -> " + b[k];
  if (listed) what += ")";
  fail(dir, " holds the pieces of a run with different settings", what,
       "; remove it or repeat the same command to resume");
}

}  // namespace rar::io
