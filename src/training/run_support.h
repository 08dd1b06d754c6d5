// run_support.h — what every training loop shares: stopping cleanly on SIGINT/SIGTERM, a JSONL
// metrics log, and bf16 autocast on CUDA.
#pragma once
#include <cstdio>
#include <string>

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

namespace rar::training {

// After install_stop_handlers(), SIGINT/SIGTERM set a flag instead of killing the process; the
// loop checks stop_requested(), writes a checkpoint and exits. A second signal kills at once.
void install_stop_handlers();
bool stop_requested();
void request_stop();  // for tests and time budgets

// Appends one JSON object per line to <path> and flushes it, so the log survives a crash.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path, bool append);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& row);

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};

// Autocast to `dtype` on `device` for the guard's lifetime; a no-op when disabled.
class Autocast {
 public:
  Autocast(bool enabled, c10::DeviceType device, c10::ScalarType dtype);
  ~Autocast();

 private:
  bool enabled_, prev_enabled_ = false;
  c10::DeviceType device_;
  c10::ScalarType prev_dtype_ = c10::kFloat;
};

}  // namespace rar::training
