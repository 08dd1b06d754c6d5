// state_dict.h — an ordered name → tensor map: what every checkpoint format reads into and writes
// from. Order is the file's order (PyTorch state dicts are OrderedDicts).
#pragma once
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/types.h>

namespace rar::io {

class StateDict {
 public:
  void set(const std::string& name, torch::Tensor t);
  bool has(const std::string& name) const { return index_.count(name) > 0; }
  // Throws rar::Error "<source>: missing tensor '<name>'" when absent.
  const torch::Tensor& at(const std::string& name) const;
  // The sizes of tensor `name`, which must have `dims` dimensions (else rar::Error naming it).
  std::vector<int64_t> sizes(const std::string& name, int64_t dims) const;
  const std::vector<std::string>& names() const { return names_; }
  size_t size() const { return names_.size(); }
  bool empty() const { return names_.empty(); }
  int64_t numel() const;

  // Where the tensors came from (a path), for error messages.
  std::string source;
  // Free-form string metadata (safetensors `__metadata__`).
  std::map<std::string, std::string> metadata;

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, torch::Tensor> index_;
};

}  // namespace rar::io
