#include "data/token_file.h"

#include <cstdio>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::data {
namespace {

constexpr char kMagic[8] = {'R', 'A', 'R', 'T', 'O', 'K', 0, 0};
constexpr size_t kHeader = 64;

// FNV-1a 64 with the format's own offset basis (token_file.h: not the standard one; part of the format)
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
  size_ = static_cast<size_t>(regular_file_size(path));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, path, ": cannot open (", std::strerror(errno), ")");
  if (size_ >= kHeader) map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) map_ = nullptr;
  try {
    validate(verify_checksum);
  } catch (...) {  // the destructor does not run for a constructor that throws
    if (map_) ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

void TokenFile::validate(bool verify_checksum) {
  const std::string& path = path_;
  check(size_ >= kHeader && map_ != nullptr, path, ": too short for a token file header (", size_, " bytes)");
  const auto* h = static_cast<const uint8_t*>(map_);
  check(std::memcmp(h, kMagic, 8) == 0, path, ": not a .rartok token file (bad magic)");
  check(get(h, 8, 4) == 1, path, ": token file version ", get(h, 8, 4), " not supported (expected 1)");
  token_bytes_ = static_cast<int>(get(h, 12, 4));
  check(token_bytes_ == 2 || token_bytes_ == 4, path, ": bad token width ", token_bytes_);
  const uint64_t V = get(h, 16, 8), S = get(h, 24, 8), N = get(h, 32, 8), C = get(h, 40, 8);
  constexpr uint64_t kMax = uint64_t(1) << 40;  // any field beyond this is corruption, not data
  check(V >= 1 && V <= kMax && S >= 1 && S <= kMax && N <= kMax && C >= 1 && C <= kMax, path,
        ": header fields out of range (V=", V, ", S=", S, ", N=", N, ", C=", C, ")");
  check(token_bytes_ == 4 || V <= 65536, path, ": V=", V, " does not fit 2-byte token ids");
  info_ = {int64_t(V), int64_t(S), int64_t(N), int64_t(C), get(h, 48, 8), static_cast<int64_t>(size_)};
  uint64_t want = 0, tokens = 0;
  const bool fits = !__builtin_mul_overflow(N, S, &tokens) && !__builtin_mul_overflow(tokens, uint64_t(token_bytes_), &want) &&
                    !__builtin_add_overflow(want, kHeader + 4 * N, &want);
  check(fits && size_ == want, path, ": ", size_, " bytes, but the header (N=", N, ", S=", S, ") needs ",
        fits ? std::to_string(want) : std::string("more than 2^64"), " (truncated or corrupted)");
  if (verify_checksum)
    check(fnv1a(h + kHeader, size_ - kHeader) == get(h, 48, 8), path, ": checksum mismatch (corrupted data)");
  // Ids out of range would index the wrong embedding rows (a label equal to C is the null class).
  const uint8_t* body = h + kHeader;
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (uint64_t i = 0; i < N; ++i) {
    const int64_t v = static_cast<int32_t>(get(body, 4 * i, 4));
    lo = std::min(lo, v), hi = std::max(hi, v);
  }
  check(N == 0 || (lo >= 0 && hi < info_.classes), path, ": class ids span [", lo, ", ", hi, "], outside [0, ",
        info_.classes, ")");
  const uint8_t* tp = body + 4 * N;
  uint64_t tmax = 0;
  for (uint64_t i = 0; i < tokens; ++i) {
    const uint64_t v = token_bytes_ == 2 ? get(tp, 2 * i, 2) : static_cast<uint64_t>(static_cast<int32_t>(get(tp, 4 * i, 4)));
    tmax = std::max(tmax, v);  // a negative int32 becomes huge here
  }
  check(tokens == 0 || tmax < V, path, ": token id ", static_cast<int64_t>(tmax), " outside [0, ", V, ")");
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, size_);
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

TokenFileWriter::TokenFileWriter(const std::string& path, int64_t codebook, int64_t seq_len, int64_t classes,
                                 int64_t count)
    : path_(path), codebook_(codebook), seq_len_(seq_len), classes_(classes), count_(count),
      bytes_(codebook <= 65536 ? 2 : 4), hash_(fnv1a(nullptr, 0)) {
  check(codebook >= 1 && seq_len >= 1 && classes >= 1 && count >= 0, path, ": bad token file sizes");
  file_ = std::make_unique<AtomicFile>(path);
  file_->write(std::string(kHeader, '\0'));  // the header, once the checksum is known
}

void TokenFileWriter::put(const void* p, size_t n) {
  hash_ = fnv1a(static_cast<const uint8_t*>(p), n, hash_);
  pending_.append(static_cast<const char*>(p), n);
  if (pending_.size() >= (4u << 20)) flush();
}

void TokenFileWriter::flush() {
  file_->write(pending_);
  pending_.clear();
}

void TokenFileWriter::labels(const int32_t* p, int64_t n) {
  check(rows_ == 0, path_, ": labels after tokens");
  for (int64_t i = 0; i < n; ++i)
    check(p[i] >= 0 && p[i] < classes_, path_, ": class id ", p[i], " outside [0, ", classes_, ")");
  labels_ += n;
  check(labels_ <= count_, path_, ": more labels than the ", count_, " sequences announced");
  put(p, static_cast<size_t>(n) * 4);
}

void TokenFileWriter::tokens(const void* rows, int64_t n) {
  check(labels_ == count_, path_, ": tokens before all ", count_, " labels");
  const int64_t k = n * seq_len_;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t v = bytes_ == 2 ? static_cast<const uint16_t*>(rows)[i] : static_cast<const int32_t*>(rows)[i];
    check(v >= 0 && v < codebook_, path_, ": token id ", v, " outside [0, ", codebook_, ")");
  }
  rows_ += n;
  check(rows_ <= count_, path_, ": more token rows than the ", count_, " sequences announced");
  put(rows, static_cast<size_t>(k) * bytes_);
}

void TokenFileWriter::finish() {
  check(labels_ == count_ && rows_ == count_, path_, ": ", labels_, " labels and ", rows_, " token rows for ", count_,
        " sequences");
  flush();
  std::string h(kHeader, '\0');
  std::memcpy(h.data(), kMagic, 8);
  ::rar::data::put(h, 8, 1, 4);
  ::rar::data::put(h, 12, bytes_, 4);
  ::rar::data::put(h, 16, codebook_, 8);
  ::rar::data::put(h, 24, seq_len_, 8);
  ::rar::data::put(h, 32, count_, 8);
  ::rar::data::put(h, 40, classes_, 8);
  ::rar::data::put(h, 48, hash_, 8);
  file_->write_at(0, h.data(), h.size());
  file_->commit();
}

nlohmann::json TokenFile::identity() const {
  char hex[24];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(info_.checksum));
  return {{"path", path_}, {"sequences", info_.count}, {"bytes", info_.bytes}, {"checksum", hex}};
}

std::string TokenFile::describe(const nlohmann::json& id) {
  return std::to_string(id.value("sequences", int64_t{0})) + " sequences, " + std::to_string(id.value("bytes", int64_t{0})) +
         " bytes, checksum " + id.value("checksum", std::string("?"));
}

void TokenFile::expect(int64_t codebook, int64_t seq_len, int64_t classes) const {
  check(info_.codebook == codebook && info_.seq_len == seq_len, path_, ": tokens are V=", info_.codebook, ", S=",
        info_.seq_len, " but the model expects V=", codebook, ", S=", seq_len);
  check(classes <= 0 || info_.classes <= classes, path_, ": ", info_.classes, " classes, the model has ", classes);
}

}  // namespace rar::data
