#include "io/torch_checkpoint.h"

#include "io/pickle.h"
#include "io/zip.h"
#include "util/error.h"

namespace rar::io {
namespace {

using K = PyObject::Kind;

bool is_tensor_dict(const PyRef& o) {
  if (o->kind != K::Dict || o->entries.empty()) return false;
  for (auto& [k, v] : o->entries)
    if (k->kind != K::Str || v->kind != K::Tensor) return false;
  return true;
}

}  // namespace

StateDict read_torch_checkpoint(const std::string& path) {
  ZipReader zip(path);
  std::string pkl;
  for (const auto& n : zip.names()) {
    if (n == "data.pkl" || (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0 &&
                            n.find('/') == n.size() - 9)) {
      check(pkl.empty(), path, ": archive holds more than one data.pkl");
      pkl = n;
    }
  }
  check(!pkl.empty(), path, ": zip archive without data.pkl: not a torch.save checkpoint");
  std::string prefix = pkl.substr(0, pkl.size() - 8);  // "archive/" or ""
  if (zip.has(prefix + "byteorder")) {
    std::string order = zip.read(prefix + "byteorder");
    check(order == "little", path, ": byteorder '", order, "' is not supported (expected little)");
  }

  StorageLoader load = [&](torch::ScalarType dtype, const std::string& key, int64_t numel) {
    std::string member = prefix + "data/" + key;
    check(zip.has(member), path, ": storage '", key, "' is missing from the archive");
    uint64_t nbytes = static_cast<uint64_t>(numel) * c10::elementSize(dtype);
    uint64_t have = zip.size(member);
    check(have >= nbytes, path, ": storage '", key, "' holds ", have, " bytes, expected ", nbytes, " (",
          numel, " x ", c10::toString(dtype), ")");
    torch::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (nbytes) zip.read(member, t.data_ptr(), nbytes);
    return t;
  };
  PyRef root = unpickle(zip.read(pkl), load, path + ":" + pkl);

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
  for (auto& [k, v] : dict->entries) sd.set(k->s, v->tensor);
  return sd;
}

}  // namespace rar::io
