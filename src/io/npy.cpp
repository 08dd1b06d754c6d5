#include "io/npy.h"

#include <cstring>
#include <algorithm>
#include <cctype>

#include "io/zip.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/parse.h"

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

namespace {

// The header dict of an .npy file, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }:
// a Python literal read by a small scanner (linear time, no recursion) that accepts only this form.
class HeaderScanner {
 public:
  HeaderScanner(const std::string& text, const std::string& what) : t_(text), what_(what) {}

  void parse(std::string& descr, bool& fortran, std::vector<int64_t>& shape) {
    bool has_descr = false, has_fortran = false, has_shape = false;
    expect('{');
    while (!peek('}')) {
      const std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        check(peek('\'') || peek('"'), what_, ": .npy 'descr' must be a string (structured dtypes are not supported)");
        descr = string_literal();
        has_descr = true;
      } else if (key == "fortran_order") {
        fortran = word() == "True";
        has_fortran = true;
      } else if (key == "shape") {
        shape = int_tuple();
        has_shape = true;
      } else {
        fail(what_, ": .npy header has an unknown key '", shorten(key), "'");
      }
      if (!peek('}')) expect(',');
    }
    expect('}');
    check(has_descr, what_, ": .npy header has no 'descr'");
    check(has_fortran, what_, ": .npy header has no 'fortran_order'");
    check(has_shape, what_, ": .npy header has no 'shape'");
  }

 private:
  void skip_space() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\t' || t_[i_] == '\r')) ++i_;
  }
  bool peek(char c) {
    skip_space();
    return i_ < t_.size() && t_[i_] == c;
  }
  void expect(char c) {
    check(peek(c), what_, ": malformed .npy header (expected '", c, "' at character ", i_, ")");
    ++i_;
  }
  std::string string_literal() {
    skip_space();
    check(i_ < t_.size() && (t_[i_] == '\'' || t_[i_] == '"'), what_, ": malformed .npy header (expected a string at character ", i_, ")");
    const char q = t_[i_++];
    const size_t e = t_.find(q, i_);
    check(e != std::string::npos, what_, ": malformed .npy header (unterminated string)");
    std::string v = t_.substr(i_, e - i_);
    i_ = e + 1;
    return v;
  }
  std::string word() {
    skip_space();
    const size_t b = i_;
    while (i_ < t_.size() && std::isalpha(static_cast<unsigned char>(t_[i_]))) ++i_;
    std::string w = t_.substr(b, i_ - b);
    check(w == "True" || w == "False", what_, ": .npy 'fortran_order' must be True or False");
    return w;
  }
  std::vector<int64_t> int_tuple() {
    expect('(');
    std::vector<int64_t> v;
    while (!peek(')')) {
      const size_t b = i_;
      while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
      if (i_ < t_.size() && t_[i_] == 'L') ++i_;  // Python 2 longs
      int64_t d = 0;
      const std::string digits = t_.substr(b, (i_ > b && t_[i_ - 1] == 'L') ? i_ - b - 1 : i_ - b);
      check(parse_int(digits, d), what_, ": .npy shape entry '", shorten(digits), "' is not a non-negative integer");
      check(v.size() < 64, what_, ": .npy shape has more than 64 dimensions");
      v.push_back(d);
      if (!peek(')')) expect(',');
    }
    expect(')');
    return v;
  }

  const std::string& t_;
  const std::string& what_;
  size_t i_ = 0;
};

constexpr uint64_t kMaxNpyHeader = 1 << 20;

struct NpyLayout {
  torch::ScalarType type = torch::kUInt8;
  bool fortran = false;
  std::vector<int64_t> shape;
  uint64_t numel = 0, nbytes = 0;
  size_t data_offset = 0;
};

// Bytes needed before the header text: magic (6), version (2), header length (2 or 4).
size_t npy_preamble(const char* b, size_t n, uint64_t& hlen, const std::string& what) {
  static const char kMagic[] = "\x93NUMPY";
  check(n >= 10 && std::memcmp(b, kMagic, 6) == 0, what, ": not an .npy file (bad magic)");
  const int major = static_cast<unsigned char>(b[6]);
  check(major >= 1 && major <= 3, what, ": unsupported .npy version ", major);
  if (major == 1) {
    hlen = static_cast<unsigned char>(b[8]) | (static_cast<unsigned char>(b[9]) << 8);
    return 10;
  }
  check(n >= 12, what, ": truncated .npy header");
  hlen = 0;
  for (int i = 0; i < 4; ++i) hlen |= static_cast<uint64_t>(static_cast<unsigned char>(b[8 + i])) << (8 * i);
  check(hlen <= kMaxNpyHeader, what, ": .npy header of ", hlen, " bytes (at most ", kMaxNpyHeader, " accepted)");
  return 12;
}

NpyLayout npy_layout(const std::string& header, size_t data_offset, const std::string& what) {
  NpyLayout l;
  std::string descr;
  HeaderScanner(header, what).parse(descr, l.fortran, l.shape);
  l.type = dtype_from_descr(descr, what);
  l.numel = 1;
  for (int64_t d : l.shape)
    check(!__builtin_mul_overflow(l.numel, static_cast<uint64_t>(d), &l.numel) && l.numel <= (uint64_t(1) << 62), what,
          ": .npy shape ", c10::IntArrayRef(l.shape), " is too large");
  check(!__builtin_mul_overflow(l.numel, static_cast<uint64_t>(c10::elementSize(l.type)), &l.nbytes), what,
        ": .npy shape ", c10::IntArrayRef(l.shape), " is too large");
  l.data_offset = data_offset;
  return l;
}

// An empty tensor of the file's storage layout (C order, or reversed dims for Fortran order).
torch::Tensor npy_storage(const NpyLayout& l) {
  std::vector<int64_t> storage_shape = l.shape;
  if (l.fortran) std::reverse(storage_shape.begin(), storage_shape.end());
  return torch::empty(storage_shape, torch::TensorOptions().dtype(l.type));
}

// From the storage layout to the array numpy means: booleans made 0/1, Fortran order undone.
torch::Tensor npy_finish(torch::Tensor t, const NpyLayout& l) {
  if (l.type == torch::kBool) {  // any nonzero byte is True; torch requires 0/1
    auto* p = static_cast<uint8_t*>(t.data_ptr());
    for (uint64_t i = 0; i < l.numel; ++i) p[i] = p[i] != 0;
  }
  if (l.fortran) {
    std::vector<int64_t> perm(l.shape.size());
    for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(perm.size() - 1 - i);
    t = t.permute(perm).contiguous();
  }
  return t;
}

// An npz member, read front to back: the header first, then the data. A stored member's data goes
// straight into the tensor (its size is checked against the file by the zip reader); a compressed
// member's is inflated in growing pieces, so memory follows the bytes that really come out, and
// nothing is inflated past what the header declares.
torch::Tensor npz_member(const ZipReader& zip, const std::string& name, const std::string& what) {
  const auto st = zip.stat(name);
  ZipReader::Stream in(zip, name);
  check(st.size >= 10, what, ": not an .npy file (bad magic)");
  char pre[12] = {};
  in.read(pre, 10);
  size_t n = 10;
  if (pre[6] != 1 && st.size >= 12) {
    in.read(pre + 10, 2);
    n = 12;
  }
  uint64_t hlen = 0;
  const size_t start = npy_preamble(pre, n, hlen, what);
  check(st.size - start >= hlen, what, ": truncated .npy header");
  std::string header(hlen, '\0');
  in.read(header.data(), hlen);
  const NpyLayout l = npy_layout(header, start + hlen, what);
  check(st.size - l.data_offset == l.nbytes, what, ": .npy data of ", st.size - l.data_offset, " bytes, shape ",
        c10::IntArrayRef(l.shape), " needs ", l.nbytes);
  if (st.stored) {
    torch::Tensor t = npy_storage(l);
    in.read(t.data_ptr(), l.nbytes);
    in.expect_end();
    return npy_finish(t, l);
  }
  std::string data;
  while (data.size() < l.nbytes) {
    const uint64_t have = data.size(), step = std::min<uint64_t>(l.nbytes - have, std::max<uint64_t>(have, 1 << 20));
    data.resize(have + step);
    in.read(data.data() + have, step);
  }
  in.expect_end();
  torch::Tensor t = npy_storage(l);
  if (l.nbytes) std::memcpy(t.data_ptr(), data.data(), l.nbytes);
  return npy_finish(t, l);
}

}  // namespace

struct NpzRowStream::Impl {
  explicit Impl(const std::string& path) : zip(path) {}
  ZipReader zip;
  std::unique_ptr<ZipReader::Stream> in;
};

NpzRowStream::NpzRowStream(const std::string& path, const std::string& member) : what_(path + ":" + member) {
  impl_ = std::make_unique<Impl>(path);
  const std::string name = member + ".npy";
  check(impl_->zip.has(name), path, ": no array '", member, "'");
  const auto st = impl_->zip.stat(name);
  impl_->in = std::make_unique<ZipReader::Stream>(impl_->zip, name);
  check(st.size >= 10, what_, ": not an .npy file (bad magic)");
  char pre[12] = {};
  impl_->in->read(pre, 10);
  size_t n = 10;
  if (pre[6] != 1 && st.size >= 12) {
    impl_->in->read(pre + 10, 2);
    n = 12;
  }
  uint64_t hlen = 0;
  const size_t start = npy_preamble(pre, n, hlen, what_);
  check(st.size - start >= hlen, what_, ": truncated .npy header");
  std::string header(hlen, '\0');
  impl_->in->read(header.data(), hlen);
  const NpyLayout l = npy_layout(header, start + hlen, what_);
  check(st.size - l.data_offset == l.nbytes, what_, ": .npy data of ", st.size - l.data_offset, " bytes, shape ",
        c10::IntArrayRef(l.shape), " needs ", l.nbytes);
  check(!l.fortran && !l.shape.empty(), what_, ": expected a C-ordered array with rows");
  check(l.type != torch::kBool, what_, ": boolean arrays are not streamed");
  shape_ = l.shape;
  type_ = l.type;
  row_bytes_ = static_cast<int64_t>(c10::elementSize(type_));
  for (size_t d = 1; d < shape_.size(); ++d) row_bytes_ *= shape_[d];
}

NpzRowStream::~NpzRowStream() = default;

torch::Tensor NpzRowStream::next(int64_t n) {
  n = std::min(n, remaining());
  std::vector<int64_t> shape = shape_;
  shape[0] = std::max<int64_t>(n, 0);
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(type_));
  if (n <= 0) return t;
  impl_->in->read(t.data_ptr(), static_cast<uint64_t>(n * row_bytes_));
  done_ += n;
  if (done_ == rows()) impl_->in->expect_end();
  return t;
}

torch::Tensor npy_decode(const std::string& b, const std::string& what) {
  uint64_t hlen = 0;
  const size_t start = npy_preamble(b.data(), b.size(), hlen, what);
  check(b.size() - start >= hlen, what, ": truncated .npy header");
  const NpyLayout l = npy_layout(b.substr(start, hlen), start + hlen, what);
  const uint64_t have = b.size() - l.data_offset;
  check(have == l.nbytes, what, have < l.nbytes ? ": truncated .npy data (" : ": trailing bytes after the .npy data (",
        have, " bytes, shape ", c10::IntArrayRef(l.shape), " needs ", l.nbytes, ")");
  torch::Tensor t = npy_storage(l);
  if (l.nbytes) std::memcpy(t.data_ptr(), b.data() + l.data_offset, l.nbytes);
  return npy_finish(t, l);
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
    if (key.size() > 4 && has_suffix(key, ".npy")) key.resize(key.size() - 4);
    for (const auto& [k, _] : out) check(k != key, path, ": two arrays named '", shorten(key), "'");
    out.emplace_back(key, npz_member(zip, name, path + ":" + key));
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
  bool npz = has_suffix(path, ".npz");
  if (!npz) return read_npy(path);
  NamedArrays arrays = read_npz(path);
  check(!arrays.empty(), path, ": archive holds no arrays");
  if (member.empty()) return arrays.front().second;
  for (auto& [name, t] : arrays)
    if (name == member) return t;
  fail(path, ": no array named '", member, "'");
}

}  // namespace rar::io
