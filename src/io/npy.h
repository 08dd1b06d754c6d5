// npy.h — NumPy .npy and .npz files as torch tensors (CPU, contiguous).
// Supported element types: bool, uint8, int8, int16, int32, int64, float16, float32, float64
// (little-endian; Fortran-ordered arrays are read and made C-ordered). npz members may be stored
// or deflated (np.savez_compressed); we write them stored. Writes are atomic.
#pragma once
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

}  // namespace rar::io
