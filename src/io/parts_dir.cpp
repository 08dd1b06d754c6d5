#include "io/parts_dir.h"

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {

void open_parts_dir(const std::string& dir, const nlohmann::json& settings) {
  make_dirs(dir);
  const std::string manifest = join_path(dir, "manifest.json");
  // Paths may hold bytes that are not UTF-8: replaced in the text, compared as text.
  const auto text = [](const nlohmann::json& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace); };
  if (!path_exists(manifest)) return write_file_atomic(manifest, text(settings));
  auto old = nlohmann::json::parse(read_file(manifest, 1 << 20), nullptr, false);
  check(!old.is_discarded() && text(old) == text(settings), dir,
        " holds the pieces of a run with different settings; remove it or repeat the same command to resume");
}

}  // namespace rar::io
