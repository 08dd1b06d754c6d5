#include "util/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace rar {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_ = path_ + ".tmp-" + std::to_string(::getpid());
  f_ = std::fopen(tmp_.c_str(), "wb");
  check(f_ != nullptr, path_, ": cannot open for writing (", std::strerror(errno), ")");
}

AtomicFile::~AtomicFile() {
  if (f_) std::fclose(f_);
  if (!committed_) std::remove(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  check(f_ != nullptr, path_, ": write after commit");
  if (n && std::fwrite(data, 1, n, f_) != n)
    fail(path_, ": write failed (", std::strerror(errno), ")");
}

void AtomicFile::commit() {
  check(f_ != nullptr, path_, ": commit twice");
  bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
  int err = errno;
  ok = (std::fclose(f_) == 0) && ok;
  f_ = nullptr;
  check(ok, path_, ": write failed (", std::strerror(err), ")");
  check(std::rename(tmp_.c_str(), path_.c_str()) == 0, path_, ": cannot rename temp file into place (",
        std::strerror(errno), ")");
  committed_ = true;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  check(!in.bad(), path, ": read failed");
  return ss.str();
}

}  // namespace rar
