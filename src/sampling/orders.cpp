#include "sampling/orders.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace rar::sampling {

const std::vector<std::string>& order_names() {
  static const std::vector<std::string> names = {"raster", "spiral-in", "spiral-out", "z-curve", "subsample",
                                                 "alternate"};
  return names;
}

std::vector<int64_t> scan_order(const std::string& name, int64_t rows, int64_t cols) {
  check(rows > 0 && cols > 0, "scan order: grid must be non-empty");
  std::vector<int64_t> tau;
  tau.reserve(rows * cols);
  auto at = [&](int64_t r, int64_t c) { tau.push_back(r * cols + c); };
  if (name == "raster") {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) at(r, c);
  } else if (name == "alternate") {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < cols; ++i) at(r, r % 2 == 0 ? i : cols - 1 - i);
  } else if (name == "spiral-in" || name == "spiral-out") {
    int64_t top = 0, bottom = rows - 1, left = 0, right = cols - 1;
    while (top <= bottom && left <= right) {
      for (int64_t c = left; c <= right; ++c) at(top, c);
      for (int64_t r = top + 1; r <= bottom; ++r) at(r, right);
      if (top < bottom)
        for (int64_t c = right - 1; c >= left; --c) at(bottom, c);
      if (left < right)
        for (int64_t r = bottom - 1; r > top; --r) at(r, left);
      ++top, --bottom, ++left, --right;
    }
    if (name == "spiral-out") std::reverse(tau.begin(), tau.end());
  } else if (name == "z-curve") {
    std::vector<std::pair<uint64_t, int64_t>> keyed;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        uint64_t key = 0;
        for (int b = 0; b < 32; ++b)
          key |= ((static_cast<uint64_t>(c) >> b) & 1) << (2 * b) | ((static_cast<uint64_t>(r) >> b) & 1) << (2 * b + 1);
        keyed.emplace_back(key, r * cols + c);
      }
    std::sort(keyed.begin(), keyed.end());
    for (auto& k : keyed) tau.push_back(k.second);
  } else if (name == "subsample") {
    for (int64_t dr : {0, 1})
      for (int64_t dc : {0, 1})
        for (int64_t r = dr; r < rows; r += 2)
          for (int64_t c = dc; c < cols; c += 2) at(r, c);
  } else {
    fail("unknown scan order '", name, "' (expected raster, spiral-in, spiral-out, z-curve, subsample or alternate)");
  }
  return tau;
}

std::vector<int64_t> scan_order(const std::string& name, int64_t seq_len) {
  auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(seq_len))));
  check(side * side == seq_len, "scan order '", name, "': ", seq_len, " tokens do not form a square grid");
  return scan_order(name, side, side);
}

torch::Tensor order_tensor(const std::vector<int64_t>& order) {
  return torch::tensor(order, torch::kInt64);
}

}  // namespace rar::sampling
