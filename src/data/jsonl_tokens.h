// jsonl_tokens.h — the published code's pretokenized dataset (scripts/pretokenization.py writes
// `pretokenized.jsonl`; the checkpoints' release ships ImageNet's as `maskgitvq.jsonl`): one
// {"class_id": int, "tokens": [S ints]} per line, ten crops of each image, ~12.8M lines. It is
// converted, streaming, into the .rartok the trainer reads (data/token_file.h). Every line is
// checked — a JSON object with exactly those two fields, the class in [0, C), S token ids in
// [0, V) — and an error names the line. The work is cut into chunks of lines written as they
// finish ("<out>.parts/chunk-NNNNNN.bin", the parts folder's manifest naming the input's size and
// modification time), so a killed run resumes at the next chunk's byte offset and gives the same
// bytes; the final file is assembled from the chunks in bounded memory.
#pragma once
#include <cstdint>
#include <string>

namespace rar::data {

struct JsonlSettings {
  std::string jsonl;  // the input
  std::string out;    // the .rartok
  int64_t codebook = 1024, classes = 1000, seq_len = 256;  // the published MaskGIT-VQGAN / ImageNet
  int64_t chunk_lines = 1 << 20;
  int64_t max_chunks = 0;  // > 0: stop after this many new chunks (resume later)
  bool progress = true;
};

// Returns false when max_chunks stopped it before the end (run it again to continue).
bool convert_jsonl_tokens(const JsonlSettings& s);

// The .rartok made for a published config's `dataset.params.pretokenization` (rar train): beside
// the .jsonl ("<path>.rartok"), converted once and reused while the .jsonl keeps its size and
// modification time (recorded beside it); a run converts it if it is missing or stale.
std::string rartok_for_jsonl(const std::string& jsonl, int64_t codebook, int64_t classes, int64_t seq_len);

}  // namespace rar::data
