// run_support.h — what every training loop shares: stopping cleanly on SIGINT/SIGTERM and a JSONL
// metrics log (and, from util/autocast.h, bf16 autocast scopes).
#pragma once
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "util/autocast.h"

namespace rar::training {

// After install_stop_handlers(), SIGINT/SIGTERM set a flag instead of killing the process; the
// loop checks stop_requested(), writes a checkpoint and exits. A second signal kills at once.
void install_stop_handlers();
bool stop_requested();
void request_stop();  // for tests and time budgets

// Appends one JSON object per line to <path> and flushes it, so the log survives a crash.
class MetricsLog {
 public:
  // `rows`: how many rows the file already holds when appending (counted on from there).
  explicit MetricsLog(const std::string& path, bool append, int64_t rows = 0);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& row);
  int64_t rows() const { return rows_; }  // in the file, for the checkpoint (io::truncate_metrics)

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
  int64_t rows_ = 0;
};

// bf16 autocast scopes: util/autocast.h.
using rar::Autocast;

}  // namespace rar::training
