#include "util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace rar {

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

int64_t file_size(const std::string& path) {
  struct stat st;
  const bool ok = ::stat(path.c_str(), &st) == 0;  // errno read after the call, not among check's arguments
  check(ok, path, ": cannot stat (", std::strerror(errno), ")");
  return static_cast<int64_t>(st.st_size);
}

int64_t regular_file_size(const std::string& path) {
  struct stat st;
  const bool ok = ::stat(path.c_str(), &st) == 0;
  check(ok, path, ": cannot open (", std::strerror(errno), ")");
  check(!S_ISDIR(st.st_mode), path, ": is a directory, expected a file");
  check(S_ISREG(st.st_mode), path, ": not a regular file (a device, pipe or socket cannot be read as data)");
  return static_cast<int64_t>(st.st_size);
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, path, ": cannot open to sync (", std::strerror(errno), ")");
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some filesystems cannot sync a directory (EINVAL): the rename itself is still atomic there.
  check(rc == 0 || err == EINVAL, path, ": fsync failed (", std::strerror(err), ")");
}

std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string basename_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void make_dirs(const std::string& path) {
  if (path.empty() || is_directory(path)) return;
  auto slash = path.find_last_of('/', path.size() - 2);
  if (slash != std::string::npos && slash > 0) make_dirs(path.substr(0, slash));
  const bool ok = ::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST;
  check(ok, path, ": cannot create directory (", std::strerror(errno), ")");
}

void remove_tree(const std::string& path) {
  if (!path_exists(path)) return;
  ::nftw(
      path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

std::vector<std::string> list_dir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  check(d != nullptr, path, ": cannot list directory (", std::strerror(errno), ")");
  std::vector<std::string> names;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string make_temp_dir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "XXXXXX";
  const bool ok = ::mkdtemp(templ.data()) != nullptr;
  check(ok, templ, ": cannot create temp directory (", std::strerror(errno), ")");
  return templ;
}

std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty() || b.rfind('/', 0) == 0) return b;
  return a.back() == '/' ? a + b : a + "/" + b;
}

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace rar
