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
// Writes the tensors of `sd` (in its order) as the file `torch.save(state_dict, path)` writes: the
// zip archive of a protocol-2 pickle of a dict of tensors rebuilt by torch._utils._rebuild_tensor_v2
// over typed storages, one raw storage member per tensor — what the published code loads with
// torch.load(path, map_location="cpu", weights_only=True). LibTorch's own pickler writes it
// (torch::pickle_save); atomic. Metadata is not kept (the format has no place for it).
void write_torch_checkpoint(const std::string& path, const StateDict& sd);
bool is_legacy_torch_file(const std::string& head);  // the first bytes of a file

}  // namespace rar::io
