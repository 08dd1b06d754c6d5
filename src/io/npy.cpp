#include "io/npy.h"

#include <cstring>
#include <regex>

#include "io/zip.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace rar::io {
namespace {

struct Dtype {
  const char* descr;
  torch::ScalarType type;
};
// '|' marks single-byte types (no byte order); '<' little-endian.
const Dtype kDtypes[] = {{"|b1", torch::kBool},   {"|u1", torch::kUInt8},  {"|i1", torch::kInt8},
                         {"<i2", torch::kInt16},  {"<i4", torch::kInt32},  {"<i8", torch::kInt64},
                         {"<f2", torch::kFloat16}, {"<f4", torch::kFloat32}, {"<f8", torch::kFloat64}};

torch::ScalarType dtype_from_descr(std::string d, const std::string& what) {
  if (d.size() == 3 && d[0] == '=') d[0] = '<';  // native order on a little-endian machine
  if (d.size() == 3 && (d[1] == 'u' || d[1] == 'i' || d[1] == 'b') && d[2] == '1') d[0] = '|';
  for (const auto& e : kDtypes)
    if (d == e.descr) return e.type;
  fail(what, ": unsupported npy dtype '", d,
       "' (expected little-endian bool, uint8, int8, int16, int32, int64, float16, float32 or float64)");
}

const char* descr_of(torch::ScalarType t) {
  for (const auto& e : kDtypes)
    if (e.type == t) return e.descr;
  fail("npy: cannot store tensors of type ", c10::toString(t));
}

}  // namespace

torch::Tensor npy_decode(const std::string& b, const std::string& what) {
  static const char kMagic[] = "\x93NUMPY";
  check(b.size() >= 10 && std::memcmp(b.data(), kMagic, 6) == 0, what, ": not an .npy file (bad magic)");
  int major = static_cast<unsigned char>(b[6]);
  check(major >= 1 && major <= 3, what, ": unsupported .npy version ", major);
  size_t hlen, hstart;
  if (major == 1) {
    hlen = static_cast<unsigned char>(b[8]) | (static_cast<unsigned char>(b[9]) << 8);
    hstart = 10;
  } else {
    check(b.size() >= 12, what, ": truncated .npy header");
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= static_cast<size_t>(static_cast<unsigned char>(b[8 + i])) << (8 * i);
    hstart = 12;
  }
  check(b.size() >= hstart + hlen, what, ": truncated .npy header");
  std::string header = b.substr(hstart, hlen);

  std::smatch m;
  check(std::regex_search(header, m, std::regex(R"('descr'\s*:\s*'([^']*)')")), what,
        ": .npy header has no 'descr'");
  torch::ScalarType type = dtype_from_descr(m[1], what);
  check(std::regex_search(header, m, std::regex(R"('fortran_order'\s*:\s*(True|False))")), what,
        ": .npy header has no 'fortran_order'");
  bool fortran = m[1] == "True";
  check(std::regex_search(header, m, std::regex(R"('shape'\s*:\s*\(([^)]*)\))")), what,
        ": .npy header has no 'shape'");
  std::vector<int64_t> shape;
  std::string dims = m[1];
  check(std::regex_match(dims, std::regex(R"([\d\s,]*)")), what, ": .npy header has a malformed shape '(", dims, ")'");
  std::regex num(R"(\s*(\d+)\s*(,|$))");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll((*it)[1]));

  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  size_t nbytes = static_cast<size_t>(numel) * c10::elementSize(type);
  size_t have = b.size() - hstart - hlen;
  check(have >= nbytes, what, ": truncated .npy data (", have, " bytes, shape needs ", nbytes, ")");

  std::vector<int64_t> storage_shape = shape;
  if (fortran) std::reverse(storage_shape.begin(), storage_shape.end());
  torch::Tensor t = torch::empty(storage_shape, torch::TensorOptions().dtype(type));
  if (nbytes) std::memcpy(t.data_ptr(), b.data() + hstart + hlen, nbytes);
  if (type == torch::kBool) {  // any nonzero byte is True; torch requires 0/1
    auto* p = static_cast<uint8_t*>(t.data_ptr());
    for (int64_t i = 0; i < numel; ++i) p[i] = p[i] != 0;
  }
  if (fortran) {
    std::vector<int64_t> perm(shape.size());
    for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(perm.size() - 1 - i);
    t = t.permute(perm).contiguous();
  }
  return t;
}

std::string npy_header(torch::ScalarType type, const std::vector<int64_t>& dims) {
  std::string shape;
  for (int64_t d : dims) shape += std::to_string(d) + ", ";
  if (dims.size() == 1) shape.pop_back();                   // "(4,)"
  else if (dims.size() > 1) shape.erase(shape.size() - 2);  // "(4, 256)"
  std::string header = cat("{'descr': '", descr_of(type), "', 'fortran_order': False, 'shape': (", shape, "), }");
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  return out;
}

std::string npy_encode(const torch::Tensor& tensor) {
  torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  std::string out = npy_header(t.scalar_type(), t.sizes().vec());
  out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

torch::Tensor read_npy(const std::string& path) { return npy_decode(read_file(path), path); }

void write_npy(const std::string& path, const torch::Tensor& t) { write_file_atomic(path, npy_encode(t)); }

NamedArrays read_npz(const std::string& path) {
  ZipReader zip(path);
  NamedArrays out;
  for (const auto& name : zip.names()) {
    std::string key = name;
    if (key.size() > 4 && key.compare(key.size() - 4, 4, ".npy") == 0) key.resize(key.size() - 4);
    out.emplace_back(key, npy_decode(zip.read(name), path + ":" + key));
  }
  return out;
}

void write_npz(const std::string& path, const NamedArrays& arrays) {
  ZipWriter zip(path);
  for (const auto& [name, t] : arrays) zip.add(name + ".npy", npy_encode(t));
  zip.commit();
}

torch::Tensor read_array(const std::string& spec) {
  std::string path = spec, member;
  auto pos = spec.find(".npz:");
  if (pos != std::string::npos) {
    path = spec.substr(0, pos + 4);
    member = spec.substr(pos + 5);
  }
  bool npz = path.size() >= 4 && path.compare(path.size() - 4, 4, ".npz") == 0;
  if (!npz) return read_npy(path);
  NamedArrays arrays = read_npz(path);
  check(!arrays.empty(), path, ": archive holds no arrays");
  if (member.empty()) return arrays.front().second;
  for (auto& [name, t] : arrays)
    if (name == member) return t;
  fail(path, ": no array named '", member, "'");
}

}  // namespace rar::io
