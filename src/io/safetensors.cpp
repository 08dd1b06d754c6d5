#include "io/safetensors.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "util/atomic_file.h"
#include "util/error.h"

namespace rar::io {
namespace {

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
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  check(in.good(), path, ": cannot open");
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  check(file_size >= 8, path, ": truncated safetensors file (", file_size, " bytes)");
  unsigned char lenbuf[8];
  in.read(reinterpret_cast<char*>(lenbuf), 8);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<uint64_t>(lenbuf[i]) << (8 * i);
  check(hlen <= file_size - 8 && hlen <= (100u << 20), path, ": safetensors header length ", hlen,
        " does not fit the file (", file_size, " bytes)");
  std::string header(hlen, '\0');
  in.read(header.data(), static_cast<std::streamsize>(hlen));
  nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  check(j.is_object(), path, ": safetensors header is not a JSON object");
  const uint64_t data_start = 8 + hlen, data_size = file_size - data_start;

  StateDict sd;
  sd.source = path;
  // Order tensors by their data offset: the order they were written in.
  std::vector<std::pair<uint64_t, std::string>> order;
  for (auto& [name, info] : j.items()) {
    if (name == "__metadata__") {
      check(info.is_object(), path, ": __metadata__ is not an object");
      for (auto& [k, v] : info.items()) {
        check(v.is_string(), path, ": __metadata__ value '", k, "' is not a string");
        sd.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    check(info.is_object() && info.contains("dtype") && info.contains("shape") && info.contains("data_offsets"),
          path, ": tensor '", name, "' needs dtype, shape and data_offsets");
    check(info["data_offsets"].is_array() && info["data_offsets"].size() == 2 &&
              info["data_offsets"][0].is_number_unsigned() && info["data_offsets"][1].is_number_unsigned(),
          path, ": tensor '", name, "': data_offsets must be [begin, end]");
    order.emplace_back(info["data_offsets"][0].get<uint64_t>(), name);
  }
  std::sort(order.begin(), order.end());
  for (auto& [begin_, name] : order) {
    const auto& info = j[name];
    std::string dt = info["dtype"].is_string() ? info["dtype"].get<std::string>() : "?";
    torch::ScalarType type = torch::kFloat32;
    bool known = false;
    for (auto& [n, s] : kDtypes)
      if (dt == n) type = s, known = true;
    check(known, path, ": tensor '", name, "': unsupported dtype '", dt, "'");
    std::vector<int64_t> shape;
    check(info["shape"].is_array(), path, ": tensor '", name, "': shape must be a list");
    for (auto& d : info["shape"]) {
      check(d.is_number_unsigned(), path, ": tensor '", name, "': shape must hold non-negative integers");
      shape.push_back(d.get<int64_t>());
    }
    uint64_t begin = info["data_offsets"][0], end = info["data_offsets"][1];
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(type));
    uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    check(begin <= end && end <= data_size, path, ": tensor '", name, "': data_offsets [", begin, ", ", end,
          "] outside the data (", data_size, " bytes; file truncated?)");
    check(end - begin == nbytes, path, ": tensor '", name, "': ", end - begin, " bytes for shape ",
          c10::IntArrayRef(shape), " of ", dt, " (expected ", nbytes, ")");
    in.seekg(static_cast<std::streamoff>(data_start + begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes));
    check(in.good(), path, ": read failed for tensor '", name, "'");
    sd.set(name, t);
  }
  return sd;
}

void write_safetensors(const std::string& path, const StateDict& sd) {
  nlohmann::ordered_json j;
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
  std::string header = j.dump();
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
