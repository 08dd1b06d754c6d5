#include "util/atomic_file.h"

#include <sstream>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/crash_point.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  check(!is_directory(path_), path_, ": is a directory, expected a file name");
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
  if (n && std::fwrite(data, 1, n, f_) != n) {
    const int err = errno;
    fail(path_, ": write failed (", std::strerror(err), ")");
  }
  if (n > 1) {  // a kill here leaves a half-written temp file
    std::fflush(f_);
    crash_point("atomic-file.write");
  }
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t n) {
  check(f_ != nullptr, path_, ": write after commit");
  const bool ok = std::fflush(f_) == 0 && ::pwrite(::fileno(f_), data, n, static_cast<off_t>(offset)) == static_cast<ssize_t>(n);
  if (!ok) {
    const int err = errno;
    fail(path_, ": write failed (", std::strerror(err), ")");
  }
}

void AtomicFile::commit() {
  check(f_ != nullptr, path_, ": commit twice");
  crash_point("atomic-file.before-sync");
  bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
  int err = errno;
  ok = (std::fclose(f_) == 0) && ok;
  f_ = nullptr;
  check(ok, path_, ": write failed (", std::strerror(err), ")");
  crash_point("atomic-file.before-rename");
  const bool renamed = std::rename(tmp_.c_str(), path_.c_str()) == 0;
  check(renamed, path_, ": cannot rename temp file into place (", std::strerror(errno), ")");
  committed_ = true;
  crash_point("atomic-file.after-rename");
  fsync_path(parent_dir(path_));  // the rename itself survives a crash
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  const uint64_t size = static_cast<uint64_t>(regular_file_size(path));
  check(size <= max_bytes, path, ": ", size, " bytes, more than the ", max_bytes, " this reader accepts");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, path, ": cannot open (", std::strerror(errno), ")");
  std::string out(size, '\0');
  uint64_t got = 0;
  while (got < size) {
    ssize_t r = ::read(fd, out.data() + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int err = errno;
      ::close(fd);
      fail(path, ": read failed after ", got, " of ", size, " bytes (", r == 0 ? "file shrank" : std::strerror(err), ")");
    }
    got += static_cast<uint64_t>(r);
  }
  ::close(fd);
  return out;
}

int remove_stale_temp_files(const std::string& dir, const std::string& prefix) {
  if (!is_directory(dir)) return 0;
  int removed = 0;
  for (const auto& name : list_dir(dir)) {
    const auto at = name.rfind(".tmp-");
    if (at == std::string::npos || name.compare(0, prefix.size(), prefix) != 0) continue;
    // "<name>.tmp-<pid>" (AtomicFile, ZipWriter) and libzip's "<name>.tmp-<pid>.XXXXXX"
    std::string pid_text = name.substr(at + 5);
    pid_text = pid_text.substr(0, pid_text.find('.'));
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos || pid_text.size() > 9) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno == EPERM) continue;  // its writer still runs
    remove_tree(join_path(dir, name));
    ++removed;
  }
  return removed;
}

}  // namespace rar
