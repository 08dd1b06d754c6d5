// npy.h — NumPy .npy and .npz files as torch tensors (CPU, contiguous).
// Supported element types: bool, uint8, int8, int16, int32, int64, float16, float32, float64
// (little-endian; Fortran-ordered arrays are read and made C-ordered). npz members may be stored
// or deflated (np.savez_compressed); we write them stored. Writes are atomic.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace rar::io {

using NamedArrays = std::vector<std::pair<std::string, torch::Tensor>>;

// `what` names the source in error messages (a path, or "a.npz:arr_0").
torch::Tensor npy_decode(const std::string& bytes, const std::string& what);
std::string npy_encode(const torch::Tensor& t);
// The header alone, for streaming an array of `shape` and `type` to a file piece by piece.
std::string npy_header(torch::ScalarType type, const std::vector<int64_t>& shape);

torch::Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const torch::Tensor& t);

// Members in archive order, names without the ".npy" suffix.
NamedArrays read_npz(const std::string& path);
void write_npz(const std::string& path, const NamedArrays& arrays);

// Reads one array from either a .npy file or, for "file.npz" or "file.npz:name", an npz member
// (the first member when no name is given).
torch::Tensor read_array(const std::string& spec);

// One C-ordered array of an .npz (stored or deflated), read in blocks of rows along its first
// dimension: memory holds one block, whatever the array's size (e.g. 50,000 images of 256x256x3).
class NpzRowStream {
 public:
  NpzRowStream(const std::string& path, const std::string& member);
  ~NpzRowStream();
  const std::vector<int64_t>& shape() const { return shape_; }
  torch::ScalarType dtype() const { return type_; }
  int64_t rows() const { return shape_.empty() ? 0 : shape_[0]; }
  int64_t remaining() const { return rows() - done_; }
  // The next min(n, remaining()) rows (an empty tensor at the end).
  torch::Tensor next(int64_t n);

 private:
  std::string what_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<int64_t> shape_;
  torch::ScalarType type_ = torch::kUInt8;
  int64_t done_ = 0, row_bytes_ = 0;
};

}  // namespace rar::io
