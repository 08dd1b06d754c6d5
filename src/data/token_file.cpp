#include "data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "util/atomic_file.h"
#include "util/error.h"

namespace rar::data {
namespace {

constexpr char kMagic[8] = {'R', 'A', 'R', 'T', 'O', 'K', 0, 0};
constexpr size_t kHeader = 64;

uint64_t fnv1a(const uint8_t* p, size_t n, uint64_t h = 1469598103934665603ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

void put(std::string& h, size_t off, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) h[off + i] = static_cast<char>(v >> (8 * i));
}
uint64_t get(const uint8_t* h, size_t off, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(h[off + i]) << (8 * i);
  return v;
}

}  // namespace

void write_token_file(const std::string& path, const torch::Tensor& tokens_in, const torch::Tensor& labels_in,
                      int64_t codebook, int64_t classes) {
  check(tokens_in.dim() == 2 && !tokens_in.is_floating_point(), path, ": tokens must be integers [N,S]");
  check(labels_in.dim() == 1 && labels_in.size(0) == tokens_in.size(0), path, ": labels must be [N]");
  auto tokens = tokens_in.to(torch::kInt64).cpu();
  auto labels = labels_in.to(torch::kInt64).cpu();
  check(tokens.numel() == 0 || (tokens.min().item<int64_t>() >= 0 && tokens.max().item<int64_t>() < codebook), path,
        ": token ids outside [0, ", codebook, ")");
  check(labels.numel() == 0 || (labels.min().item<int64_t>() >= 0 && labels.max().item<int64_t>() < classes), path,
        ": class ids outside [0, ", classes, ")");
  const int bytes = codebook <= 65536 ? 2 : 4;
  auto lab = labels.to(torch::kInt32).contiguous();
  auto tok = (bytes == 2 ? tokens.to(torch::kUInt16) : tokens.to(torch::kInt32)).contiguous();
  const auto* lp = static_cast<const uint8_t*>(lab.data_ptr());
  const auto* tp = static_cast<const uint8_t*>(tok.data_ptr());
  size_t lbytes = lab.numel() * 4, tbytes = tok.numel() * bytes;
  std::string h(kHeader, '\0');
  std::memcpy(h.data(), kMagic, 8);
  put(h, 8, 1, 4);
  put(h, 12, bytes, 4);
  put(h, 16, codebook, 8);
  put(h, 24, tokens.size(1), 8);
  put(h, 32, tokens.size(0), 8);
  put(h, 40, classes, 8);
  put(h, 48, fnv1a(tp, tbytes, fnv1a(lp, lbytes)), 8);
  AtomicFile f(path);
  f.write(h);
  f.write(lp, lbytes);
  f.write(tp, tbytes);
  f.commit();
}

TokenFile::TokenFile(const std::string& path, bool verify_checksum) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  check(fd >= 0, path, ": cannot open (", std::strerror(errno), ")");
  struct stat st;
  ::fstat(fd, &st);
  size_ = static_cast<size_t>(st.st_size);
  if (size_ >= kHeader) map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  check(size_ >= kHeader && map_ != MAP_FAILED, path, ": too short for a token file header (", size_, " bytes)");
  const auto* h = static_cast<const uint8_t*>(map_);
  check(std::memcmp(h, kMagic, 8) == 0, path, ": not a .rartok token file (bad magic)");
  check(get(h, 8, 4) == 1, path, ": token file version ", get(h, 8, 4), " not supported (expected 1)");
  token_bytes_ = static_cast<int>(get(h, 12, 4));
  check(token_bytes_ == 2 || token_bytes_ == 4, path, ": bad token width ", token_bytes_);
  info_ = {int64_t(get(h, 16, 8)), int64_t(get(h, 24, 8)), int64_t(get(h, 32, 8)), int64_t(get(h, 40, 8))};
  size_t want = kHeader + size_t(info_.count) * 4 + size_t(info_.count) * info_.seq_len * token_bytes_;
  check(size_ == want, path, ": ", size_, " bytes, but the header (N=", info_.count, ", S=", info_.seq_len,
        ") needs ", want, " (truncated or corrupted)");
  if (verify_checksum)
    check(fnv1a(h + kHeader, size_ - kHeader) == get(h, 48, 8), path, ": checksum mismatch (corrupted data)");
}

TokenFile::~TokenFile() {
  if (map_ && map_ != MAP_FAILED) ::munmap(map_, size_);
}

torch::Tensor TokenFile::labels() const {
  return torch::from_blob(static_cast<uint8_t*>(map_) + kHeader, {info_.count}, torch::kInt32);
}

torch::Tensor TokenFile::tokens() const {
  return torch::from_blob(static_cast<uint8_t*>(map_) + kHeader + info_.count * 4, {info_.count, info_.seq_len},
                          token_bytes_ == 2 ? torch::kUInt16 : torch::kInt32);
}

std::pair<torch::Tensor, torch::Tensor> TokenFile::batch(const torch::Tensor& rows) const {
  auto r = rows.to(torch::kInt64).cpu();
  return {tokens().index_select(0, r).to(torch::kInt64), labels().index_select(0, r).to(torch::kInt64)};
}

void TokenFile::expect(int64_t codebook, int64_t seq_len, int64_t classes) const {
  check(info_.codebook == codebook && info_.seq_len == seq_len, path_, ": tokens are V=", info_.codebook, ", S=",
        info_.seq_len, " but the model expects V=", codebook, ", S=", seq_len);
  check(classes <= 0 || info_.classes <= classes, path_, ": ", info_.classes, " classes, the model has ", classes);
}

}  // namespace rar::data
