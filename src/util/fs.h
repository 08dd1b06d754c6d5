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
void make_dirs(const std::string& path);              // mkdir -p
void remove_tree(const std::string& path);            // rm -rf (no error when missing)
std::vector<std::string> list_dir(const std::string& path);  // names, sorted, without . and ..
std::string make_temp_dir(const std::string& prefix);  // mkdtemp under $TMPDIR or /tmp
std::string join_path(const std::string& a, const std::string& b);

}  // namespace rar
