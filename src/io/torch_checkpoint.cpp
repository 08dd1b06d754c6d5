#include "io/torch_checkpoint.h"

#include <cstring>
#include <map>

#include <ATen/core/Dict.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include "io/pickle.h"
#include "io/zip.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {
namespace {

// A state dict's pickle is tens of kilobytes; anything this large is not one.
constexpr uint64_t kMaxPickleBytes = 256ull << 20;

using K = PyObject::Kind;

bool is_tensor_dict(const PyRef& o) {
  if (o->kind != K::Dict || o->entries.empty()) return false;
  for (auto& [k, v] : o->entries)
    if (k->kind != K::Str || v->kind != K::Tensor) return false;
  return true;
}

// The state dict inside an unpickled checkpoint: the top-level tensor dict or a nested one.
StateDict state_dict_in(const PyRef& root, const std::string& path) {
  PyRef dict;
  if (is_tensor_dict(root)) {
    dict = root;
  } else if (root->kind == K::Dict) {
    for (const char* key : {"state_dict", "model", "ema", "module", "generator"}) {
      for (auto& [k, v] : root->entries)
        if (!dict && k->kind == K::Str && k->s == key && is_tensor_dict(v)) dict = v;
    }
  }
  if (!dict) {
    if (root->kind != K::Dict) fail(path, ": not a state dict (the pickle holds a ", kind_name(root->kind), ")");
    fail(path, ": not a state dict (a dict whose values are not all tensors, and no nested ",
         "'state_dict'/'model'/'ema'/'module'/'generator' dict of tensors)");
  }
  StateDict sd;
  sd.source = path;
  for (auto& [k, v] : dict->entries) {
    check(!sd.has(k->s), path, ": the state dict holds the name '", k->s.substr(0, 200), "' twice");
    sd.set(k->s, v->tensor);
  }
  return sd;
}

}  // namespace

StateDict read_torch_checkpoint(const std::string& path) {
  ZipReader zip(path);
  std::string pkl;
  for (const auto& n : zip.names()) {
    if (n == "data.pkl" || (n.size() > 9 && has_suffix(n, "/data.pkl") &&
                            n.find('/') == n.size() - 9)) {
      check(pkl.empty(), path, ": archive holds more than one data.pkl");
      pkl = n;
    }
  }
  check(!pkl.empty(), path, ": zip archive without data.pkl: not a torch.save checkpoint");
  std::string prefix = pkl.substr(0, pkl.size() - 8);  // "archive/" or ""
  if (zip.has(prefix + "byteorder")) {
    std::string order = zip.read(prefix + "byteorder", 64);
    check(order == "little", path, ": byteorder '", order, "' is not supported (expected little)");
  }

  // Storages: each member must hold exactly numel x element size bytes (a Half storage over float
  // bytes is refused, as is one that declares more than the archive holds), and the stored bytes of
  // all storages together must fit in the file (entries that overlap cannot multiply them).
  uint64_t storage_bytes_in_file = 0;
  StorageLoader load = [&](torch::ScalarType dtype, const std::string& key, int64_t numel) {
    std::string member = prefix + "data/" + key;
    check(zip.has(member), path, ": storage '", key, "' is missing from the archive");
    const uint64_t esize = c10::elementSize(dtype);
    uint64_t nbytes = 0;
    check(!__builtin_mul_overflow(static_cast<uint64_t>(numel), esize, &nbytes), path, ": storage '", key,
          "' declares ", numel, " elements (overflow)");
    const auto st = zip.stat(member);
    check(st.size == nbytes, path, ": storage '", key, "' holds ", st.size, " bytes, expected ", nbytes, " (", numel,
          " x ", c10::toString(dtype), ")");
    storage_bytes_in_file += st.comp_size;
    check(storage_bytes_in_file <= zip.file_size(), path, ": storages claim more bytes than the file holds (",
          "overlapping zip entries)");
    if (!st.stored) {  // compressed (torch.save never does this): inflate first, then allocate
      std::string bytes = zip.read(member);
      torch::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
      if (nbytes) std::memcpy(t.data_ptr(), bytes.data(), nbytes);
      return t;
    }
    torch::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    zip.read(member, t.data_ptr(), nbytes);
    return t;
  };
  PyRef root = unpickle(zip.read(pkl, kMaxPickleBytes), load, path + ":" + pkl);

  return state_dict_in(root, path);
}

bool is_legacy_torch_file(const std::string& head) {
  static const char kMagic[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
  return head.size() >= 15 && std::memcmp(head.data(), kMagic, 15) == 0;
}

StateDict read_legacy_torch_checkpoint(const std::string& path) {
  const std::string d = read_file(path);
  check(is_legacy_torch_file(d), path, ": not a legacy torch.save file (magic number missing)");
  size_t pos = 15;
  StorageLoader none = [&](torch::ScalarType, const std::string&, int64_t) -> torch::Tensor {
    fail(path, ": unexpected storage in a header pickle");
  };
  auto version = unpickle_at(d, pos, none, path + " (protocol version)");
  check(version->kind == K::Int && version->i == 1001, path, ": legacy format protocol version is not 1001");
  auto sys = unpickle_at(d, pos, none, path + " (system info)");
  check(sys->kind == K::Dict, path, ": legacy format system info is not a dict");
  for (auto& [k, v] : sys->entries)
    if (k->kind == K::Str && k->s == "little_endian")
      check(v->kind == K::Bool && v->i == 1, path, ": written on a big-endian machine (not supported)");
  // The object: storages are allocated now and filled from the data that follows the pickles;
  // tensors are views of them, so they see the data once it is read.
  std::map<std::string, torch::Tensor> storages;
  // Storages are allocated before their data is read: together they must fit in what is left of the file.
  uint64_t declared = 0;
  StorageLoader alloc = [&](torch::ScalarType dtype, const std::string& key, int64_t numel) {
    uint64_t nbytes = 0;
    check(!__builtin_mul_overflow(static_cast<uint64_t>(numel), c10::elementSize(dtype), &nbytes) &&
              !__builtin_add_overflow(declared, nbytes, &declared) && declared <= d.size(),
          path, ": storage '", key, "' declares ", numel, " elements, more than the file's ", d.size(), " bytes hold");
    auto t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    storages[key] = t;
    return t;
  };
  auto root = unpickle_at(d, pos, alloc, path);
  auto keys = unpickle_at(d, pos, none, path + " (storage keys)");
  check(keys->kind == K::List, path, ": legacy format storage key list missing");
  for (const auto& k : keys->items) {
    check(k->kind == K::Str && storages.count(k->s), path, ": storage key list names an unknown storage");
    auto& t = storages[k->s];
    check(d.size() - pos >= 8, path, ": truncated before storage '", k->s, "'");
    int64_t numel = 0;
    std::memcpy(&numel, d.data() + pos, 8);
    pos += 8;
    check(numel >= 0 && numel == t.numel(), path, ": storage '", k->s, "' holds ", numel, " elements, the pickle says ", t.numel());
    const size_t nbytes = static_cast<size_t>(numel) * t.element_size();  // <= d.size(): checked at allocation
    check(d.size() - pos >= nbytes, path, ": truncated in storage '", k->s, "'");
    if (nbytes) std::memcpy(t.data_ptr(), d.data() + pos, nbytes);
    pos += nbytes;
  }
  check(keys->items.size() == storages.size(), path, ": ", storages.size() - keys->items.size(),
        " storages have no data");
  return state_dict_in(root, path);
}

void write_torch_checkpoint(const std::string& path, const StateDict& sd) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& n : sd.names()) dict.insert(n, sd.at(n).detach().cpu().contiguous());
  // LibTorch's pickler without type tags (torch::pickle_save tags the dict with
  // torch.jit._pickle.restore_type_tag, which weights_only loading refuses), then torch.save's
  // archive: <name>/data.pkl, <name>/data/<key> per storage, <name>/version
  std::string pickle;
  torch::jit::Pickler pickler([&](const char* p, size_t n) { pickle.append(p, n); }, nullptr, nullptr, nullptr, nullptr,
                              /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(c10::IValue(dict));
  pickler.stop();
  std::string bytes;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* p, size_t n) {
      bytes.append(static_cast<const char*>(p), n);
      return n;
    });
    torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(), writer);
    writer.writeEndOfFile();
  }
  write_file_atomic(path, bytes);
}

}  // namespace rar::io
