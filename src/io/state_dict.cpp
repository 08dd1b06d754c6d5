#include "io/state_dict.h"

#include "util/error.h"

namespace rar::io {

void StateDict::set(const std::string& name, torch::Tensor t) {
  if (!index_.count(name)) names_.push_back(name);
  index_[name] = std::move(t);
}

const torch::Tensor& StateDict::at(const std::string& name) const {
  auto it = index_.find(name);
  check(it != index_.end(), source, ": missing tensor '", name, "'");
  return it->second;
}

std::vector<int64_t> StateDict::sizes(const std::string& name, int64_t dims) const {
  const auto& t = at(name);
  check(t.dim() == dims, source, ": tensor '", name, "' has ", t.dim(), " dims, expected ", dims);
  return t.sizes().vec();
}

int64_t StateDict::numel() const {
  int64_t n = 0;
  for (const auto& [name, t] : index_) n += t.numel();
  return n;
}

}  // namespace rar::io
