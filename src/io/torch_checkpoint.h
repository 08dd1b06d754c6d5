// torch_checkpoint.h — reads PyTorch `torch.save` files (.bin/.pt/.pth: a zip archive holding
// `<prefix>/data.pkl` and raw storages `<prefix>/data/<key>`) through the restricted unpickler.
// Works for files written by PyTorch 1.6+ and 2.x. The pre-1.6 legacy (non-zip) format is refused.
#pragma once
#include <string>

#include "io/state_dict.h"

namespace rar::io {

// The state dict in the file: the top-level dict of tensors, or — for training checkpoints that
// wrap it — the tensor dict under one of "state_dict", "model", "ema", "module", "generator".
StateDict read_torch_checkpoint(const std::string& path);

}  // namespace rar::io
