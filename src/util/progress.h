// progress.h — a one-line progress display for long jobs: done/total, rate, ETA, and any extra
// fields the caller sets (loss, lr, ...). On a terminal it redraws in place; otherwise (logs, CI)
// it prints a line at most every few seconds.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace rar {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit, int64_t start = 0);
  // Sets the count of finished units (absolute) and an optional free-form suffix.
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");
  double rate() const;  // units per second since construction (excluding `start`)

 private:
  void print(bool final);
  std::string label_, unit_, extra_;
  int64_t total_, start_, done_;
  std::chrono::steady_clock::time_point t0_, last_print_;
  bool tty_;
};

}  // namespace rar
