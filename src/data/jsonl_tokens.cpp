// jsonl_tokens.cpp — see jsonl_tokens.h. Lines are parsed with simdjson's on-demand API straight
// out of a large read buffer (the bytes after a line are its padding; the buffer keeps
// SIMDJSON_PADDING spare bytes after the last one).
#include "data/jsonl_tokens.h"

#include <sys/stat.h>

#include <simdjson.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/token_file.h"
#include "io/parts_dir.h"
#include "util/atomic_file.h"
#include "util/crash_point.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::data {
namespace {

constexpr char kChunkMagic[8] = {'R', 'A', 'R', 'J', 'S', 'O', 'N', 'L'};
constexpr size_t kChunkHeader = 64;
constexpr size_t kBlock = 16u << 20;      // read buffer
constexpr size_t kMaxLine = 1u << 20;     // a line of 256 ids is ~1.2 KB

void put64(char* h, uint64_t v) {
  for (int i = 0; i < 8; ++i) h[i] = static_cast<char>(v >> (8 * i));
}
uint64_t get64(const unsigned char* h) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(h[i]) << (8 * i);
  return v;
}

// A finished chunk: its rows, and where in the input the next chunk starts.
struct ChunkInfo {
  int64_t rows = 0, next_offset = 0, next_line = 0;
};

std::string chunk_path(const std::string& parts, int64_t c) {
  char name[32];
  std::snprintf(name, sizeof name, "chunk-%06lld.bin", static_cast<long long>(c));
  return join_path(parts, name);
}

// The header of a chunk written by an earlier run (or nothing: absent, or not complete).
bool read_chunk_info(const std::string& path, int64_t seq_len, int token_bytes, ChunkInfo& info) {
  if (!path_exists(path)) return false;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  unsigned char h[kChunkHeader];
  if (!f || std::fread(h, 1, kChunkHeader, f.get()) != kChunkHeader || std::memcmp(h, kChunkMagic, 8) != 0) return false;
  info.rows = static_cast<int64_t>(get64(h + 8));
  info.next_offset = static_cast<int64_t>(get64(h + 16));
  info.next_line = static_cast<int64_t>(get64(h + 24));
  const int64_t s = static_cast<int64_t>(get64(h + 32)), b = static_cast<int64_t>(get64(h + 40));
  const int64_t want = static_cast<int64_t>(kChunkHeader) + info.rows * (4 + seq_len * token_bytes);
  return s == seq_len && b == token_bytes && info.rows >= 0 && file_size(path) == want;
}

class Converter {
 public:
  explicit Converter(const JsonlSettings& s) : s_(s), bytes_(s.codebook <= 65536 ? 2 : 4) {
    row_.resize(static_cast<size_t>(s.seq_len));
  }

  // One line (without its newline; `cap` readable bytes from `p`, at least len + SIMDJSON_PADDING).
  void line(const char* p, size_t len, size_t cap, int64_t number) {
    while (len > 0 && (p[len - 1] == '\r' || p[len - 1] == ' ' || p[len - 1] == '\t')) --len;
    if (len == 0) return;  // an empty line (e.g. the file's last) holds nothing
    auto bad = [&](const std::string& what) { fail(s_.jsonl, ": line ", number, ": ", what); };
    simdjson::ondemand::document doc;
    if (parser_.iterate(p, len, cap).get(doc)) bad("not valid JSON");
    simdjson::ondemand::object obj;
    if (doc.get_object().get(obj)) bad("expected a JSON object {\"class_id\": ..., \"tokens\": [...]}");
    bool have_class = false, have_tokens = false;
    int64_t cls = 0;
    for (auto item : obj) {
      simdjson::ondemand::field field;
      std::string_view key;
      if (std::move(item).get(field) || field.unescaped_key().get(key)) bad("not valid JSON");
      if (key == "class_id") {
        if (have_class) bad("'class_id' given twice");
        have_class = true;
        if (field.value().get_int64().get(cls)) bad("'class_id': expected an integer");
        if (cls < 0 || cls >= s_.classes)
          bad("'class_id' " + std::to_string(cls) + " outside [0, " + std::to_string(s_.classes) + ")");
      } else if (key == "tokens") {
        if (have_tokens) bad("'tokens' given twice");
        have_tokens = true;
        simdjson::ondemand::array arr;
        if (field.value().get_array().get(arr)) bad("'tokens': expected an array of token ids");
        size_t k = 0;
        for (auto v : arr) {
          int64_t t = 0;
          if (v.get_int64().get(t)) bad("'tokens'[" + std::to_string(k) + "]: expected an integer");
          if (t < 0 || t >= s_.codebook)
            bad("'tokens'[" + std::to_string(k) + "] = " + std::to_string(t) + " outside [0, " +
                std::to_string(s_.codebook) + ")");
          if (k == row_.size()) bad("more than " + std::to_string(s_.seq_len) + " tokens");
          row_[k++] = t;
        }
        if (k != row_.size()) bad(std::to_string(k) + " tokens, expected " + std::to_string(s_.seq_len));
      } else {
        bad("unknown field '" + std::string(key.substr(0, 40)) + "' (expected class_id and tokens)");
      }
    }
    const char* rest = nullptr;
    if (!doc.current_location().get(rest)) bad("text after the JSON object");  // in bounds: something is left
    if (!have_class || !have_tokens) bad(std::string("no '") + (have_class ? "tokens" : "class_id") + "'");
    labels_.push_back(static_cast<int32_t>(cls));
    for (int64_t t : row_) {
      if (bytes_ == 2) tokens16_.push_back(static_cast<uint16_t>(t));
      else tokens32_.push_back(static_cast<int32_t>(t));
    }
  }

  int64_t rows() const { return static_cast<int64_t>(labels_.size()); }

  void write_chunk(const std::string& path, int64_t next_offset, int64_t next_line) {
    std::string h(kChunkHeader, '\0');
    std::memcpy(h.data(), kChunkMagic, 8);
    put64(h.data() + 8, static_cast<uint64_t>(rows()));
    put64(h.data() + 16, static_cast<uint64_t>(next_offset));
    put64(h.data() + 24, static_cast<uint64_t>(next_line));
    put64(h.data() + 32, static_cast<uint64_t>(s_.seq_len));
    put64(h.data() + 40, static_cast<uint64_t>(bytes_));
    AtomicFile f(path);
    f.write(h);
    f.write(labels_.data(), labels_.size() * 4);
    if (bytes_ == 2) f.write(tokens16_.data(), tokens16_.size() * 2);
    else f.write(tokens32_.data(), tokens32_.size() * 4);
    f.commit();
    labels_.clear();
    tokens16_.clear();
    tokens32_.clear();
  }

 private:
  const JsonlSettings& s_;
  const int bytes_;
  simdjson::ondemand::parser parser_;
  std::vector<int64_t> row_;
  std::vector<int32_t> labels_;
  std::vector<uint16_t> tokens16_;
  std::vector<int32_t> tokens32_;
};

// The .rartok from the chunks: every chunk's labels, then every chunk's token rows.
void assemble(const JsonlSettings& s, const std::string& parts, const std::vector<ChunkInfo>& chunks, int bytes) {
  int64_t total = 0;
  for (const auto& c : chunks) total += c.rows;
  TokenFileWriter w(s.out, s.codebook, s.seq_len, s.classes, total);
  // up to 8 MB a read, no more than the rows need; uninitialised (only what is read is touched)
  const size_t row_bytes = static_cast<size_t>(s.seq_len) * bytes;
  const size_t unit_max = std::max<size_t>(4, row_bytes);
  const size_t buf_size = std::max(unit_max, std::min<size_t>(8u << 20, static_cast<size_t>(total) * unit_max));
  std::unique_ptr<char[]> buf_mem(new char[buf_size]);
  char* const buf = buf_mem.get();
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t c = 0; c < chunks.size(); ++c) {
      const std::string path = chunk_path(parts, static_cast<int64_t>(c));
      std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
      check(f != nullptr, path, ": cannot open");
      const int64_t labels_at = static_cast<int64_t>(kChunkHeader), tokens_at = labels_at + 4 * chunks[c].rows;
      const int64_t unit = pass == 0 ? 4 : static_cast<int64_t>(row_bytes);  // bytes per row of this pass
      check(std::fseek(f.get(), pass == 0 ? labels_at : tokens_at, SEEK_SET) == 0, path, ": cannot seek");
      const int64_t per_read = std::max<int64_t>(1, static_cast<int64_t>(buf_size) / unit);
      for (int64_t done = 0; done < chunks[c].rows;) {
        const int64_t n = std::min(per_read, chunks[c].rows - done);
        check(std::fread(buf, static_cast<size_t>(unit), static_cast<size_t>(n), f.get()) == static_cast<size_t>(n),
              path, ": read failed (truncated?)");
        if (pass == 0) w.labels(reinterpret_cast<const int32_t*>(buf), n);
        else w.tokens(buf, n);
        done += n;
      }
    }
  }
  w.finish();
}

nlohmann::json source_identity(const std::string& jsonl) {
  struct stat st {};
  check(::stat(jsonl.c_str(), &st) == 0 && S_ISREG(st.st_mode), jsonl, ": not a readable regular file");
  return {{"path", jsonl}, {"bytes", static_cast<int64_t>(st.st_size)}, {"mtime", static_cast<int64_t>(st.st_mtime)}};
}

}  // namespace

bool convert_jsonl_tokens(const JsonlSettings& s) {
  check(has_suffix(s.out, ".rartok"), "--out ", s.out, ": expected a .rartok file");
  check(!is_directory(s.out), "--out ", s.out, ": is a folder; expected the path of a .rartok file");
  check(s.codebook >= 1 && s.classes >= 1 && s.seq_len >= 1 && s.chunk_lines >= 1, "bad token file sizes");
  const auto source = source_identity(s.jsonl);
  const int64_t size = source.at("bytes").get<int64_t>();
  const std::string parts = s.out + ".parts";
  const auto lock = io::open_parts_dir(parts, {{"source", source}, {"codebook", s.codebook}, {"classes", s.classes},
                                              {"seq_len", s.seq_len}, {"chunk_lines", s.chunk_lines}},
                                       s.out);
  remove_stale_temp_files(parts);
  remove_stale_temp_files(parent_dir(s.out), basename_of(s.out));
  const int bytes = s.codebook <= 65536 ? 2 : 4;

  // the chunks an earlier run finished, and where the input continues
  std::vector<ChunkInfo> chunks;
  for (ChunkInfo info; read_chunk_info(chunk_path(parts, static_cast<int64_t>(chunks.size())), s.seq_len, bytes, info);)
    chunks.push_back(info);
  int64_t offset = chunks.empty() ? 0 : chunks.back().next_offset, line = chunks.empty() ? 1 : chunks.back().next_line;

  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(s.jsonl.c_str(), "rb"), &std::fclose);
  check(f != nullptr, s.jsonl, ": cannot open");
  check(std::fseek(f.get(), offset, SEEK_SET) == 0, s.jsonl, ": cannot seek to byte ", offset);
  std::unique_ptr<Progress> progress;
  if (s.progress) progress = std::make_unique<Progress>("jsonl", size >> 20, "MiB", offset >> 20);
  Converter conv(s);
  // The read buffer: a block and one longest line, no larger than the input needs (a small file
  // need not fault in 17 MB), left uninitialised (only what is read is touched).
  const size_t room = static_cast<size_t>(std::min<int64_t>(kBlock, std::max<int64_t>(size - offset, 0))) + kMaxLine;
  std::unique_ptr<char[]> buf_mem(new char[room + simdjson::SIMDJSON_PADDING]);
  char* const buf = buf_mem.get();
  size_t have = 0;
  bool eof = offset >= size, done = false;
  int64_t made = 0;
  auto finish_chunk = [&](int64_t next_offset, int64_t next_line) {
    const int64_t n = conv.rows();
    conv.write_chunk(chunk_path(parts, static_cast<int64_t>(chunks.size())), next_offset, next_line);
    chunks.push_back({n, next_offset, next_line});
    ++made;
  };
  while (!done) {
    if (!eof) {  // fill the buffer behind what is left of the last block
      const size_t n = std::fread(buf + have, 1, room - have, f.get());
      if (n == 0) eof = true;
      have += n;
    }
    std::memset(buf + have, 0, simdjson::SIMDJSON_PADDING);
    size_t at = 0;
    for (;;) {
      const char* start = buf + at;
      const void* nl = std::memchr(start, '\n', have - at);
      if (!nl && !(eof && at < have)) break;  // an incomplete line: read on
      const size_t len = nl ? static_cast<const char*>(nl) - start : have - at;
      check(len <= kMaxLine, s.jsonl, ": line ", line, ": longer than ", kMaxLine, " bytes");
      const int64_t rows_before = conv.rows();
      conv.line(start, len, room + simdjson::SIMDJSON_PADDING - at, line);
      at += len + (nl ? 1 : 0);
      ++line;
      offset += static_cast<int64_t>(len + (nl ? 1 : 0));
      if (conv.rows() > rows_before && conv.rows() == s.chunk_lines) {
        finish_chunk(offset, line);
        crash_point("jsonl.chunk");
        if (s.max_chunks > 0 && made == s.max_chunks && offset < size) {
          if (progress) progress->finish();
          std::fprintf(stderr, "stopped after %lld chunks as asked; run the same command again to resume (%s)\n",
                       static_cast<long long>(made), parts.c_str());
          return false;
        }
      }
      if (!nl) break;
    }
    check(!(at == 0 && have >= room), s.jsonl, ": line ", line, ": longer than ", kMaxLine, " bytes");
    std::memmove(buf, buf + at, have - at);
    have -= at;
    if (progress) progress->update(offset >> 20);
    done = eof && have == 0;
  }
  if (conv.rows() > 0) finish_chunk(offset, line);
  int64_t total = 0;
  for (auto& c : chunks) total += c.rows;
  check(total > 0, s.jsonl, ": no token sequences");
  if (progress) progress->finish();
  assemble(s, parts, chunks, bytes);
  remove_tree(parts);
  std::fprintf(stderr, "%lld sequences of %lld tokens -> %s\n", static_cast<long long>(total),
               static_cast<long long>(s.seq_len), s.out.c_str());
  return true;
}

std::string rartok_for_jsonl(const std::string& jsonl, int64_t codebook, int64_t classes, int64_t seq_len) {
  const std::string out = jsonl + ".rartok", record = jsonl + ".rartok.source.json";
  const auto source = source_identity(jsonl);
  if (path_exists(out) && path_exists(record)) {
    const auto was = nlohmann::json::parse(read_file(record, 1 << 20), nullptr, false);
    if (!was.is_discarded() && was == source) return out;  // converted from this very file: reused
  }
  std::fprintf(stderr, "converting %s to %s (once; reused while the .jsonl is unchanged)\n", jsonl.c_str(), out.c_str());
  JsonlSettings s;
  s.jsonl = jsonl, s.out = out, s.codebook = codebook, s.classes = classes, s.seq_len = seq_len;
  convert_jsonl_tokens(s);
  write_file_atomic(record, source.dump() + "\n");
  return out;
}

}  // namespace rar::data
