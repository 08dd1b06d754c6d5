#include "io/safetensors.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/parse.h"

namespace rar::io {
namespace {

// The format's own limit (the safetensors library refuses larger headers too).
constexpr uint64_t kMaxHeader = 100ull << 20;

const std::pair<const char*, torch::ScalarType> kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool}};

const char* dtype_name(torch::ScalarType t) {
  for (auto& [n, s] : kDtypes)
    if (s == t) return n;
  fail("safetensors: cannot store tensors of type ", c10::toString(t));
}

}  // namespace

StateDict read_safetensors(const std::string& path) {
  const uint64_t file_size = static_cast<uint64_t>(regular_file_size(path));
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path, ": cannot open");
  check(file_size >= 8, path, ": truncated safetensors file (", file_size, " bytes)");
  unsigned char lenbuf[8];
  in.read(reinterpret_cast<char*>(lenbuf), 8);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(lenbuf[i]) << (8 * i);
  check(hlen <= file_size - 8 && hlen <= kMaxHeader, path, ": safetensors header length ", hlen,
        " does not fit the file (", file_size, " bytes; at most ", kMaxHeader, " accepted)");
  std::string header(hlen, '\0');
  in.read(header.data(), static_cast<std::streamsize>(hlen));
  check(in.good(), path, ": read failed in the header");
  // The header is {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}: nothing nests
  // deeper than 3, so deeper values are dropped while parsing (memory stays proportional to what
  // is kept); a name given twice is refused rather than silently taking the last.
  bool too_deep = false;
  std::string duplicate;
  std::set<std::string> names;
  auto filter = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (depth > 3) {
      too_deep = true;
      return false;
    }
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && duplicate.empty() &&
        !names.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json j = nlohmann::json::parse(header, filter, /*allow_exceptions=*/false);
  check(j.is_object(), path, ": safetensors header is not a JSON object");
  check(!too_deep, path, ": safetensors header nests deeper than {name: {field: [values]}}");
  check(duplicate.empty(), path, ": safetensors header names the tensor '", shorten(duplicate), "' twice");
  const uint64_t data_start = 8 + hlen, data_size = file_size - data_start;

  StateDict sd;
  sd.source = path;
  struct Entry {
    uint64_t begin, end;
    std::string name;
    torch::ScalarType type;
    std::vector<int64_t> shape;
  };
  std::vector<Entry> entries;
  for (auto& [name, info] : j.items()) {
    if (name == "__metadata__") {
      check(info.is_object(), path, ": __metadata__ is not an object");
      for (auto& [k, v] : info.items()) {
        check(v.is_string(), path, ": __metadata__ value '", shorten(k), "' is not a string");
        sd.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = cat(path, ": tensor '", shorten(name), "'");
    check(info.is_object() && info.contains("dtype") && info.contains("shape") && info.contains("data_offsets"),
          what, " needs dtype, shape and data_offsets");
    const auto& off = info["data_offsets"];
    check(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(), what,
          ": data_offsets must be [begin, end]");
    Entry e{off[0].get<uint64_t>(), off[1].get<uint64_t>(), name, torch::kFloat32, {}};
    const std::string dt = info["dtype"].is_string() ? info["dtype"].get<std::string>() : "?";
    bool known = false;
    for (auto& [n, t] : kDtypes)
      if (dt == n) e.type = t, known = true;
    check(known, what, ": unsupported dtype '", shorten(dt), "'");
    check(info["shape"].is_array() && info["shape"].size() <= 64, what, ": shape must be a list of at most 64 sizes");
    uint64_t numel = 1, nbytes = 0;
    for (auto& d : info["shape"]) {
      check(d.is_number_unsigned() && d.get<uint64_t>() <= (uint64_t(1) << 62), what,
            ": shape must hold non-negative integers");
      e.shape.push_back(d.get<int64_t>());
      check(!__builtin_mul_overflow(numel, d.get<uint64_t>(), &numel), what, ": shape ", c10::IntArrayRef(e.shape),
            " overflows");
    }
    check(!__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(e.type)), &nbytes), what, ": shape ",
          c10::IntArrayRef(e.shape), " overflows");
    check(e.begin <= e.end && e.end <= data_size, what, ": data_offsets [", e.begin, ", ", e.end,
          "] outside the data (", data_size, " bytes; file truncated?)");
    check(e.end - e.begin == nbytes, what, ": ", e.end - e.begin, " bytes for shape ", c10::IntArrayRef(e.shape), " of ",
          dt, " (expected ", nbytes, ")");
    entries.push_back(std::move(e));
  }
  // The data is the tensors back to back in offset order: no overlaps, no holes, nothing after.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const auto& e : entries) {
    check(e.begin == expect, path, ": tensor '", shorten(e.name), "' starts at byte ", e.begin, " of the data, expected ",
          expect, e.begin < expect ? " (overlaps the previous tensor)" : " (a hole in the data)");
    expect = e.end;
  }
  check(expect == data_size, path, ": ", data_size - expect, " bytes after the last tensor (the header does not describe them)");
  for (const auto& e : entries) {  // read in file order; every size above is checked against the file
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.type));
    in.seekg(static_cast<std::streamoff>(data_start + e.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
    check(in.good(), path, ": read failed for tensor '", shorten(e.name), "'");
    if (e.type == torch::kBool) {  // bytes other than 0/1 are not valid torch booleans
      auto* p = static_cast<uint8_t*>(t.data_ptr());
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = p[i] != 0;
    }
    sd.set(e.name, t);
  }
  return sd;
}

void write_safetensors(const std::string& path, const StateDict& sd) {
  auto j = nlohmann::ordered_json::object();  // "{}" for an empty dict (a default json is null)
  if (!sd.metadata.empty()) j["__metadata__"] = sd.metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& name : sd.names()) {
    torch::Tensor t = sd.at(name).detach().to(torch::kCPU).contiguous();
    uint64_t n = static_cast<uint64_t>(t.numel()) * t.element_size();
    j[name] = {{"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    data.push_back(t);
  }
  std::string header;
  try {
    header = j.dump();
  } catch (const nlohmann::json::exception&) {
    fail(path, ": tensor names and metadata must be valid UTF-8 to be written as safetensors");
  }
  header.append((8 - header.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  AtomicFile f(path);
  f.write(len, 8);
  f.write(header);
  for (auto& t : data) f.write(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  f.commit();
}

}  // namespace rar::io
