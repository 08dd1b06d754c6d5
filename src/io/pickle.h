// pickle.h — a restricted unpickler: the subset of Python's pickle (protocols 2–5) that a
// torch.save state dict uses, and nothing else. It never executes code: the only callables it
// accepts are a fixed list of globals (collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter[_with_state], torch.*Storage), each interpreted by C++ here.
// Any other global, opcode or shape of data is refused with an error naming the offending item.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace rar::io {

struct PyObject;
using PyRef = std::shared_ptr<PyObject>;

// The Python values a state-dict pickle can hold.
struct PyObject {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Tensor } kind = Kind::None;
  int64_t i = 0;                                // Bool, Int
  double f = 0;                                 // Float
  std::string s;                                // Str, Bytes, Global ("module.name")
  std::vector<PyRef> items;                     // Tuple, List
  std::vector<std::pair<PyRef, PyRef>> entries; // Dict (insertion order)
  torch::Tensor tensor;                         // Tensor (also used for a storage: 1-D, flat)
  // The unpickler's bookkeeping. An object becomes `sealed` once it is placed inside another; a
  // sealed container is never modified again, so the object graph stays acyclic and `depth` (1 for
  // a leaf, 1 + the deepest child otherwise) is final once sealed.
  bool sealed = false;
  int depth = 1;
};

// Limits that hold for any input (a real state dict stays far below them): nesting depth (which
// also bounds the recursion of destroying the result) and the number of objects built (each costs
// ~200 bytes, whatever the size of the opcode that made it).
constexpr int kPickleMaxDepth = 100;
constexpr int64_t kPickleMaxObjects = 1 << 20;

const char* kind_name(PyObject::Kind k);

// Called for each persistent id ('storage', <dtype>, key, location, numel[, None]): returns the storage
// as a flat 1-D tensor with `numel` elements of `dtype`.
using StorageLoader = std::function<torch::Tensor(torch::ScalarType dtype, const std::string& key, int64_t numel)>;

// Unpickles `data`; `what` names the source in error messages.
PyRef unpickle(const std::string& data, const StorageLoader& load_storage, const std::string& what);
// Unpickles the pickle starting at data[pos] and advances `pos` past its STOP opcode (files that
// hold several pickles back to back: the legacy torch.save format).
PyRef unpickle_at(const std::string& data, size_t& pos, const StorageLoader& load_storage, const std::string& what);

}  // namespace rar::io
