#include "io/checkpoint.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {

CheckpointFormat detect_checkpoint_format(const std::string& path) {
  regular_file_size(path);  // a directory, device or pipe is an error here, not an endless read
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path, ": cannot open (", std::strerror(errno), ")");
  char head[8] = {};
  in.read(head, 8);
  auto n = in.gcount();
  if (n >= 2 && head[0] == 'P' && head[1] == 'K') return CheckpointFormat::TorchZip;
  check(n == 8, path, ": too short to be a checkpoint (", n, " bytes)");
  // safetensors: u64 little-endian header length, then a JSON object.
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(head[i]);
  char brace = 0;
  in.read(&brace, 1);
  if (in.gcount() == 1 && brace == '{' && len > 1 && len < (uint64_t(1) << 32)) return CheckpointFormat::Safetensors;
  // Legacy torch.save (before 1.6): a pickle (protocol 2) of the magic number, 0x80 0x02 0x8a 0x0a ...
  if (static_cast<unsigned char>(head[0]) == 0x80 && head[1] <= 5 && static_cast<unsigned char>(head[2]) == 0x8a)
    return CheckpointFormat::TorchLegacy;
  fail(path, ": not a checkpoint (neither a torch.save zip archive nor safetensors)");
}

const char* format_name(CheckpointFormat f) {
  return f == CheckpointFormat::TorchZip      ? "pytorch zip (torch.save)"
         : f == CheckpointFormat::TorchLegacy ? "pytorch legacy (torch.save before 1.6)"
                                              : "safetensors";
}

StateDict read_checkpoint(const std::string& path) {
  switch (detect_checkpoint_format(path)) {
    case CheckpointFormat::TorchZip: return read_torch_checkpoint(path);
    case CheckpointFormat::TorchLegacy: return read_legacy_torch_checkpoint(path);
    default: return read_safetensors(path);
  }
}

}  // namespace rar::io
