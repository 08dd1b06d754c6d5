#include "io/checkpoint.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "util/error.h"

namespace rar::io {

CheckpointFormat detect_checkpoint_format(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  char head[8] = {};
  in.read(head, 8);
  auto n = in.gcount();
  if (n >= 2 && head[0] == 'P' && head[1] == 'K') return CheckpointFormat::TorchZip;
  if (n >= 2 && static_cast<unsigned char>(head[0]) == 0x80 && head[1] <= 5)
    fail(path, ": legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with PyTorch >= 1.6");
  check(n == 8, path, ": too short to be a checkpoint (", n, " bytes)");
  return CheckpointFormat::Safetensors;
}

const char* format_name(CheckpointFormat f) {
  return f == CheckpointFormat::TorchZip ? "pytorch zip (torch.save)" : "safetensors";
}

StateDict read_checkpoint(const std::string& path) {
  return detect_checkpoint_format(path) == CheckpointFormat::TorchZip ? read_torch_checkpoint(path)
                                                                      : read_safetensors(path);
}

}  // namespace rar::io
