// checkpoint.h — one entry point for every checkpoint format: PyTorch zip (.bin/.pt/.pth) or
// safetensors, recognised by content (a zip starts "PK"), not by extension.
#pragma once
#include <string>

#include "io/state_dict.h"

namespace rar::io {

enum class CheckpointFormat { TorchZip, TorchLegacy, Safetensors };

CheckpointFormat detect_checkpoint_format(const std::string& path);
const char* format_name(CheckpointFormat f);
StateDict read_checkpoint(const std::string& path);

}  // namespace rar::io
