// autocast.h — a scope that sets LibTorch's autocast state for one device type (on or off, and
// the dtype) and restores the previous state when it ends. Used by the trainers (bf16 forward on
// CUDA) and by activation checkpointing (replaying a block under the forward's autocast state).
#pragma once
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace rar {

class Autocast {
 public:
  Autocast(bool enabled, c10::DeviceType device, c10::ScalarType dtype);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool enabled_, prev_enabled_;
  c10::DeviceType device_;
  c10::ScalarType prev_dtype_;
};

}  // namespace rar
