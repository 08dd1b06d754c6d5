// safetensors.h — the safetensors format: 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__": {str: str}}), then the raw
// little-endian tensor bytes. Our own checkpoints use it, with the model config in the metadata.
#pragma once
#include <string>

#include "io/state_dict.h"

namespace rar::io {

StateDict read_safetensors(const std::string& path);
// Writes atomically (temp file + rename). Tensors are stored contiguous, on CPU, in their dtype.
void write_safetensors(const std::string& path, const StateDict& sd);

}  // namespace rar::io
