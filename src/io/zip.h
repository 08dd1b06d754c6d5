// zip.h — thin RAII wrappers over libzip, shared by the PyTorch checkpoint reader (a torch.save
// file is a zip archive) and the .npz reader/writer. Errors name the archive and the member.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

typedef struct zip zip_t;

namespace rar::io {

// Reading treats every size an archive declares as a claim to be checked: a stored member must
// lie inside the file, and a compressed member's memory grows only with the bytes it really
// inflates to, so a hostile archive cannot make us allocate what it does not hold.
class ZipReader {
 public:
  explicit ZipReader(const std::string& path);
  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  struct Stat {
    uint64_t size = 0;       // declared uncompressed size
    uint64_t comp_size = 0;  // bytes it takes in the archive
    bool stored = false;     // not compressed: the declared size is checked against the file
  };

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const;
  Stat stat(const std::string& name) const;
  uint64_t size(const std::string& name) const { return stat(name).size; }

  // A member read front to back in pieces (e.g. a header, then data straight into a tensor).
  class Stream {
   public:
    Stream(const ZipReader& zip, const std::string& name);
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    // Reads exactly n bytes; fails naming the member if it ends sooner.
    void read(void* dst, uint64_t n);
    // Up to n bytes (fewer at the end of the member).
    uint64_t read_some(void* dst, uint64_t n);
    // Checks that the member ends here (this is also where libzip verifies the CRC).
    void expect_end();
    uint64_t position() const { return got_; }

   private:
    const ZipReader& zip_;
    std::string name_;
    void* f_ = nullptr;
    uint64_t got_ = 0;
  };

  // Reads exactly n bytes from the start of a member (the member must hold at least n); the whole
  // member when n equals its size, with its CRC checked.
  void read(const std::string& name, void* dst, uint64_t n) const;
  // A whole member, refused when it holds more than `max_bytes`. Memory follows the bytes that
  // really come out, not the declared size.
  std::string read(const std::string& name, uint64_t max_bytes = UINT64_MAX) const;

 private:
  int64_t index(const std::string& name) const;
  std::string path_;
  zip_t* zip_ = nullptr;
  uint64_t file_size_ = 0;
  std::vector<std::string> names_;
};

// Builds an archive in memory-held members and writes it atomically (temp file + rename).
class ZipWriter {
 public:
  explicit ZipWriter(std::string path) : path_(std::move(path)) {}
  void add(const std::string& name, std::string data) { members_.push_back({name, std::move(data), ""}); }
  // A member whose bytes are read from `file` when the archive is written (for large members).
  void add_file(const std::string& name, const std::string& file) { members_.push_back({name, "", file}); }
  // Deflate the members (numpy's savez_compressed layout) instead of storing them (the default).
  void set_compress(bool on) { compress_ = on; }
  void commit();

 private:
  struct Member {
    std::string name, data, file;
  };
  std::string path_;
  std::vector<Member> members_;
  bool compress_ = false;
};

}  // namespace rar::io
