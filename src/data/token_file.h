// token_file.h — the pretokenized dataset format (.rartok) the trainer reads: memory-mapped,
// little-endian, self-describing and checksummed.
//
//   offset  size  field
//   0       8     magic "RARTOK\0\0"
//   8       4     version (1)
//   12      4     bytes per token id (2 when V <= 65536, else 4)
//   16      8     V, codebook size
//   24      8     S, tokens per sample
//   32      8     N, number of samples
//   40      8     C, number of classes
//   48      8     FNV-1a 64-bit checksum of everything after the header, offset basis
//                 1469598103934665603 (a digit short of the standard 14695981039346656037: kept,
//                 files written since version 1 carry it; prime 1099511628211 as standard)
//   56      8     reserved (0)
//   64      4*N   class ids, int32
//   ...     b*N*S token ids, uint16 or int32, row-major [N,S]
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "util/atomic_file.h"

namespace rar::data {

struct TokenFileInfo {
  int64_t codebook = 0, seq_len = 0, count = 0, classes = 0;
  uint64_t checksum = 0;  // the header's (verified when the file was opened with verify_checksum)
  int64_t bytes = 0;      // the file's size
};

// Writes tokens int [N,S] and labels int [N] atomically. Fails if ids are out of range.
void write_token_file(const std::string& path, const torch::Tensor& tokens, const torch::Tensor& labels,
                      int64_t codebook, int64_t classes);

// Writes a .rartok from pieces in bounded memory: every label first (the format keeps them
// before the tokens), then every token row, each checked against V and C; finish() writes the
// header (the checksum is computed on the way) and commits atomically. `count` is the number of
// sequences that will be given (checked at finish()).
class TokenFileWriter {
 public:
  TokenFileWriter(const std::string& path, int64_t codebook, int64_t seq_len, int64_t classes, int64_t count);
  int token_bytes() const { return bytes_; }
  void labels(const int32_t* p, int64_t n);
  // n rows of seq_len ids, stored `token_bytes()` wide (uint16 or int32).
  void tokens(const void* rows, int64_t n);
  void finish();

 private:
  void put(const void* p, size_t n);
  void flush();
  std::string path_;
  int64_t codebook_, seq_len_, classes_, count_, labels_ = 0, rows_ = 0;
  int bytes_;
  uint64_t hash_;
  std::string pending_;
  std::unique_ptr<AtomicFile> file_;
};

class TokenFile {
 public:
  // Maps the file and verifies header, sizes, checksum and that every class id is in [0, C) and
  // every token id in [0, V); rejects anything inconsistent.
  explicit TokenFile(const std::string& path, bool verify_checksum = true);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  const TokenFileInfo& info() const { return info_; }
  // Views over the mapping (valid while this object lives): labels int32 [N]; tokens [N,S] as
  // stored (uint16 or int32). `batch` gathers rows as int64 tensors (copies).
  torch::Tensor labels() const;
  torch::Tensor tokens() const;
  std::pair<torch::Tensor, torch::Tensor> batch(const torch::Tensor& rows) const;
  // Fails naming the file unless V, S (and C when > 0) are as expected.
  void expect(int64_t codebook, int64_t seq_len, int64_t classes = 0) const;
  // What identifies the dataset (sequences, bytes, checksum; the path beside them), as a run records
  // it to refuse resuming on another.
  nlohmann::json identity() const;
  // "N sequences, B bytes, checksum X" of an identity().
  static std::string describe(const nlohmann::json& identity);

 private:
  void validate(bool verify_checksum);
  std::string path_;
  TokenFileInfo info_;
  int token_bytes_ = 2;
  void* map_ = nullptr;
  size_t size_ = 0;
};

}  // namespace rar::data
