// torch_checkpoint.h — reads PyTorch `torch.save` files (.bin/.pt/.pth: a zip archive holding
// `<prefix>/data.pkl` and raw storages `<prefix>/data/<key>`) through the restricted unpickler.
// Works for files written by PyTorch 1.6+ and 2.x, and the pre-1.6 legacy format (pickles back to
// back: magic number, protocol version, system info, the object, the storage keys, then each
// storage as an int64 element count and its raw bytes) — e.g. pytorch-fid's Inception weights.
#pragma once
#include <string>

#include "io/state_dict.h"

namespace rar::io {

// The state dict in the file: the top-level dict of tensors, or — for training checkpoints that
// wrap it — the tensor dict under one of "state_dict", "model", "ema", "module", "generator".
StateDict read_torch_checkpoint(const std::string& path);
StateDict read_legacy_torch_checkpoint(const std::string& path);
bool is_legacy_torch_file(const std::string& head);  // the first bytes of a file

}  // namespace rar::io
