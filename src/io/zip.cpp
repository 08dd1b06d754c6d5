#include "io/zip.h"

#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "util/crash_point.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {

// Members carry a fixed timestamp (2020-01-01), so that an archive is a function of its contents.
constexpr time_t kMemberTime = 1577836800;

ZipReader::ZipReader(const std::string& path) : path_(path) {
  file_size_ = static_cast<uint64_t>(regular_file_size(path));
  int err = 0;
  zip_ = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (!zip_) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    std::string msg = zip_error_strerror(&ze);
    zip_error_fini(&ze);
    fail(path, ": not a readable zip archive (", msg, ")");
  }
  zip_int64_t n = zip_get_num_entries(zip_, 0);
  // Every entry costs a central-directory record of at least 46 bytes.
  check(n >= 0 && static_cast<uint64_t>(n) <= file_size_ / 46 + 1, path, ": zip archive declares ", n,
        " entries, more than its ", file_size_, " bytes can hold");
  std::set<std::string> seen;
  for (zip_int64_t i = 0; i < n; ++i) {
    const char* name = zip_get_name(zip_, i, 0);
    names_.push_back(name ? name : "");
    check(seen.insert(names_.back()).second, path, ": zip archive holds two members named '", names_.back(), "'");
  }
}

ZipReader::~ZipReader() {
  if (zip_) zip_discard(zip_);
}

int64_t ZipReader::index(const std::string& name) const {
  zip_int64_t i = zip_name_locate(zip_, name.c_str(), 0);
  check(i >= 0, path_, ": archive has no member '", name, "'");
  return i;
}

bool ZipReader::has(const std::string& name) const { return zip_name_locate(zip_, name.c_str(), 0) >= 0; }

ZipReader::Stat ZipReader::stat(const std::string& name) const {
  zip_stat_t st;
  zip_stat_init(&st);
  const zip_uint64_t need = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD;
  check(zip_stat_index(zip_, index(name), 0, &st) == 0 && (st.valid & need) == need, path_, ": member '", name,
        "': cannot stat");
  Stat s{st.size, st.comp_size, st.comp_method == ZIP_CM_STORE};
  check(s.comp_size <= file_size_, path_, ": member '", name, "' claims ", s.comp_size, " bytes in a file of ",
        file_size_);
  check(!s.stored || s.size == s.comp_size, path_, ": member '", name, "' is stored uncompressed but declares ", s.size,
        " bytes for its ", s.comp_size);
  return s;
}

ZipReader::Stream::Stream(const ZipReader& zip, const std::string& name) : zip_(zip), name_(name) {
  f_ = zip_fopen_index(zip.zip_, zip.index(name), 0);
  check(f_ != nullptr, zip.path_, ": member '", name, "': cannot open (", zip_strerror(zip.zip_), ")");
}

ZipReader::Stream::~Stream() {
  if (f_) zip_fclose(static_cast<zip_file_t*>(f_));
}

uint64_t ZipReader::Stream::read_some(void* dst, uint64_t n) {
  auto* f = static_cast<zip_file_t*>(f_);
  char* out = static_cast<char*>(dst);
  uint64_t done = 0;
  while (done < n) {
    zip_int64_t r = zip_fread(f, out + done, n - done);
    check(r >= 0, zip_.path_, ": member '", name_, "': read failed after ", got_ + done, " bytes (",
          zip_error_strerror(zip_file_get_error(f)), ")");
    if (r == 0) break;
    done += static_cast<uint64_t>(r);
  }
  got_ += done;
  return done;
}

void ZipReader::Stream::read(void* dst, uint64_t n) {
  const uint64_t before = got_;
  check(read_some(dst, n) == n, zip_.path_, ": member '", name_, "': ends after ", got_, " bytes, ", before + n,
        " expected");
}

void ZipReader::Stream::expect_end() {
  char extra;
  check(read_some(&extra, 1) == 0, zip_.path_, ": member '", name_, "' holds more than its declared ", got_ - 1,
        " bytes");
}

void ZipReader::read(const std::string& name, void* dst, uint64_t n) const {
  const Stat s = stat(name);
  check(n <= s.size, path_, ": member '", name, "' holds ", s.size, " bytes, ", n, " expected");
  Stream in(*this, name);
  in.read(dst, n);
  // libzip verifies the CRC only on reaching the end of the member: when the whole member was
  // asked for, read once more so that corruption is reported.
  if (n == s.size) in.expect_end();
}

std::string ZipReader::read(const std::string& name, uint64_t max_bytes) const {
  const Stat s = stat(name);
  check(s.size <= max_bytes, path_, ": member '", name, "' declares ", s.size, " bytes, more than the ", max_bytes,
        " allowed");
  Stream in(*this, name);
  std::string out;
  if (s.stored) {  // the bytes are in the file: the declared size is real
    out.resize(s.size);
    in.read(out.data(), s.size);
  } else {  // compressed: grow with what really inflates, never to the declared size up front
    while (out.size() < s.size) {
      const uint64_t have = out.size(), step = std::min<uint64_t>(s.size - have, std::max<uint64_t>(have, 1 << 20));
      out.resize(have + step);
      in.read(out.data() + have, step);
    }
  }
  in.expect_end();
  return out;
}

void ZipWriter::commit() {
  check(!members_.empty(), path_, ": refusing to write an empty archive");
  check(!is_directory(path_), path_, ": is a directory, expected a file name");
  std::string tmp = path_ + ".tmp-" + std::to_string(::getpid());
  int err = 0;
  zip_t* z = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  check(z != nullptr, path_, ": cannot create zip archive");
  for (auto& [name, data, file] : members_) {
    zip_source_t* src = file.empty() ? zip_source_buffer(z, data.data(), data.size(), 0)
                                     : zip_source_file(z, file.c_str(), 0, -1);
    zip_int64_t i = src ? zip_file_add(z, name.c_str(), src, ZIP_FL_OVERWRITE | ZIP_FL_ENC_UTF_8) : -1;
    if (i < 0) {
      if (src) zip_source_free(src);
      zip_discard(z);
      std::remove(tmp.c_str());
      fail(path_, ": cannot add member '", name, "'");
    }
    zip_set_file_compression(z, i, compress_ ? ZIP_CM_DEFLATE : ZIP_CM_STORE, compress_ ? 6 : 0);
    zip_file_set_mtime(z, static_cast<zip_uint64_t>(i), kMemberTime, 0);  // the same bytes for the same arrays
  }
  crash_point("zip.before-close");
  if (zip_close(z) != 0) {
    std::string msg = zip_strerror(z);
    zip_discard(z);
    std::remove(tmp.c_str());
    fail(path_, ": cannot write zip archive (", msg, ")");
  }
  crash_point("zip.before-sync");
  try {
    fsync_path(tmp);  // the data is on disk before the name points at it
  } catch (const Error&) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(path_, ": cannot rename temp file into place");
  }
  crash_point("zip.after-rename");
  fsync_path(parent_dir(path_));
}

}  // namespace rar::io
