#include "io/parts_dir.h"

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {

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
  check(text(old) == text(settings), dir,
        " holds the pieces of a run with different settings; remove it or repeat the same command to resume");
  return held;
}

}  // namespace rar::io
