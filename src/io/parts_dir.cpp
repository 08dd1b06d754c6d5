#include "io/parts_dir.h"

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {

void open_parts_dir(const std::string& dir, const nlohmann::json& settings) {
  make_dirs(dir);
  const std::string manifest = join_path(dir, "manifest.json");
  if (!path_exists(manifest)) return write_file_atomic(manifest, settings.dump(2));
  auto old = nlohmann::json::parse(read_file(manifest), nullptr, false);
  check(!old.is_discarded() && old == settings, dir,
        " holds the pieces of a run with different settings; remove it or repeat the same command to resume");
}

}  // namespace rar::io
