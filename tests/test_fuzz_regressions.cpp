// The fuzz targets in the normal suite (no sanitizers needed): every file of
// tests/data/fuzz-regressions/<target>/ — each one an input that once crashed, hung or blew up
// memory — goes through its target's reader again and must end in a clean rejection or a clean
// read. The seed corpora of every target run the same way, so each target is exercised here too.
#include <torch/torch.h>

#include "fuzz/targets.h"
#include "helpers.h"
#include "util/atomic_file.h"

using namespace rar;
using namespace rar::test;

namespace {

std::vector<std::pair<std::string, std::string>> files_under(const std::string& root) {
  std::vector<std::pair<std::string, std::string>> out;  // (target, path)
  if (!is_directory(root)) return out;
  for (const auto& target : list_dir(root))
    if (is_directory(join_path(root, target)))
      for (const auto& f : list_dir(join_path(root, target))) out.emplace_back(target, join_path(join_path(root, target), f));
  return out;
}

int replay(const std::vector<std::pair<std::string, std::string>>& files) {
  int n = 0;
  for (const auto& [target, path] : files) {
    const auto* t = fuzz::find_target(target);
    EXPECT_NE(t, nullptr) << path << ": no fuzz target named '" << target << "'";
    if (!t) continue;
    const std::string bytes = read_file(path);
    SCOPED_TRACE(path);
    fuzz::run_input(*t, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());  // must not crash or throw
    ++n;
  }
  return n;
}

}  // namespace

TEST(FuzzRegressions, EveryFoundInputIsRejectedCleanly) {
  const auto files = files_under(fixture("fuzz-regressions"));
  ASSERT_FALSE(files.empty()) << "tests/data/fuzz-regressions holds no files";
  EXPECT_EQ(replay(files), static_cast<int>(files.size()));
}

TEST(FuzzRegressions, SeedCorporaOfEveryTargetRunCleanly) {
  TempDir dir;
  fuzz::write_seeds(dir.path());
  const auto files = files_under(dir.path());
  std::set<std::string> seen;
  for (const auto& [target, path] : files) seen.insert(target);
  for (const auto& t : fuzz::targets())
    if (fuzz::built(t)) EXPECT_TRUE(seen.count(t.name)) << "no seeds for fuzz target " << t.name;
  replay(files);
}
