#include "io/zip.h"

#include <unistd.h>
#include <zip.h>

#include <cstdio>

#include "util/error.h"

namespace rar::io {

ZipReader::ZipReader(const std::string& path) : path_(path) {
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
  for (zip_int64_t i = 0; i < n; ++i) {
    const char* name = zip_get_name(zip_, i, 0);
    names_.push_back(name ? name : "");
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

uint64_t ZipReader::size(const std::string& name) const {
  zip_stat_t st;
  zip_stat_init(&st);
  check(zip_stat_index(zip_, index(name), 0, &st) == 0 && (st.valid & ZIP_STAT_SIZE), path_, ": member '",
        name, "': cannot stat");
  return st.size;
}

void ZipReader::read(const std::string& name, void* dst, uint64_t n) const {
  zip_file_t* f = zip_fopen_index(zip_, index(name), 0);
  check(f != nullptr, path_, ": member '", name, "': cannot open (", zip_strerror(zip_), ")");
  uint64_t got = 0;
  char* out = static_cast<char*>(dst);
  while (got < n) {
    zip_int64_t r = zip_fread(f, out + got, n - got);
    if (r <= 0) {
      std::string msg = r < 0 ? zip_error_strerror(zip_file_get_error(f)) : "unexpected end of data";
      zip_fclose(f);
      fail(path_, ": member '", name, "': read failed after ", got, " of ", n, " bytes (", msg, ")");
    }
    got += static_cast<uint64_t>(r);
  }
  // libzip verifies the CRC only on reaching the end of the member: when the whole member was
  // asked for, read once more so that corruption is reported.
  if (n == size(name)) {
    char extra;
    if (zip_fread(f, &extra, 1) != 0) {
      std::string msg = zip_error_strerror(zip_file_get_error(f));
      zip_fclose(f);
      fail(path_, ": member '", name, "': read failed (", msg, ")");
    }
  }
  zip_fclose(f);
}

std::string ZipReader::read(const std::string& name) const {
  std::string s(size(name), '\0');
  read(name, s.data(), s.size());
  return s;
}

void ZipWriter::commit() {
  check(!members_.empty(), path_, ": refusing to write an empty archive");
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
    zip_set_file_compression(z, i, ZIP_CM_STORE, 0);
  }
  if (zip_close(z) != 0) {
    std::string msg = zip_strerror(z);
    zip_discard(z);
    std::remove(tmp.c_str());
    fail(path_, ": cannot write zip archive (", msg, ")");
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(path_, ": cannot rename temp file into place");
  }
}

}  // namespace rar::io
