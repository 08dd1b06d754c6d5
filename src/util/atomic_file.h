// atomic_file.h — write a file so that readers see either the old version or the complete new
// one, never a half-written file: data goes to "<path>.tmp-<pid>", is flushed and fsync'ed, then
// renamed over <path>. A writer destroyed before commit() removes its temp file.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace rar {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(const std::string& s) { write(s.data(), s.size()); }
  // Overwrites bytes already written at `offset` (e.g. a header whose checksum is known last).
  void write_at(uint64_t offset, const void* data, size_t n);
  const std::string& temp_path() const { return tmp_; }
  // Flushes, fsyncs and renames the temp file onto the final path.
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool committed_ = false;
};

// Writes a whole string atomically.
void write_file_atomic(const std::string& path, const std::string& content);
// Reads a whole regular file; throws rar::Error naming the file when it cannot be read, is not a
// regular file, or holds more than `max_bytes`.
std::string read_file(const std::string& path, uint64_t max_bytes = UINT64_MAX);
// read_file split into lines (without their '\n'): e.g. a class-names file, line i = class i.
std::vector<std::string> read_lines(const std::string& path);
// Temp files "<name>.tmp-<pid>" in `dir` (whose <name> starts with `prefix`) left by a process
// that no longer runs (killed between writing and renaming): removes them, returns how many.
int remove_stale_temp_files(const std::string& dir, const std::string& prefix = "");

}  // namespace rar
