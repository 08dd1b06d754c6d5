// zip.h — thin RAII wrappers over libzip, shared by the PyTorch checkpoint reader (a torch.save
// file is a zip archive) and the .npz reader/writer. Errors name the archive and the member.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

typedef struct zip zip_t;

namespace rar::io {

class ZipReader {
 public:
  explicit ZipReader(const std::string& path);
  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const;
  uint64_t size(const std::string& name) const;
  // Reads exactly n bytes from the start of a member (the member must hold at least n).
  void read(const std::string& name, void* dst, uint64_t n) const;
  std::string read(const std::string& name) const;

 private:
  int64_t index(const std::string& name) const;
  std::string path_;
  zip_t* zip_ = nullptr;
  std::vector<std::string> names_;
};

// Builds an archive in memory-held members and writes it atomically (temp file + rename).
class ZipWriter {
 public:
  explicit ZipWriter(std::string path) : path_(std::move(path)) {}
  void add(const std::string& name, std::string data) { members_.push_back({name, std::move(data), ""}); }
  // A member whose bytes are read from `file` when the archive is written (for large members).
  void add_file(const std::string& name, const std::string& file) { members_.push_back({name, "", file}); }
  void commit();

 private:
  struct Member {
    std::string name, data, file;
  };
  std::string path_;
  std::vector<Member> members_;
};

}  // namespace rar::io
