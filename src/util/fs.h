// fs.h — the few filesystem operations we need, on POSIX calls. We do not use std::filesystem:
// the PyTorch wheels' libtorch exports std::filesystem symbols of another libstdc++ build, and a
// binary compiled with GCC 13 that calls std::filesystem segfaults against it (seen on the GPU machine).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace rar {

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
int64_t file_size(const std::string& path);           // throws rar::Error when missing
// The size of a regular file (following symlinks); a directory, FIFO, device or socket, a missing
// file or a symlink loop is a one-line error naming the path. Readers call this before reading so
// that `x.png -> /dev/zero` or a named pipe cannot make them read forever.
int64_t regular_file_size(const std::string& path);
// fsync of a file or of a directory (after a rename in it); errors name the path.
void fsync_path(const std::string& path);
std::string parent_dir(const std::string& path);      // "." for a bare name
std::string basename_of(const std::string& path);     // the part after the last '/'
void make_dirs(const std::string& path);              // mkdir -p
void remove_tree(const std::string& path);            // rm -rf (no error when missing)
std::vector<std::string> list_dir(const std::string& path);  // names, sorted, without . and ..
std::string make_temp_dir(const std::string& prefix);  // mkdtemp under $TMPDIR or /tmp
std::string join_path(const std::string& a, const std::string& b);
bool has_suffix(const std::string& s, const std::string& suffix);  // e.g. a file name's extension

}  // namespace rar
