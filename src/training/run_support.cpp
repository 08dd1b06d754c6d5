// run_support.cpp — see run_support.h.
#include "training/run_support.h"

#include <ATen/autocast_mode.h>

#include <atomic>
#include <csignal>

#include "util/error.h"

namespace rar::training {
namespace {
std::atomic<int> g_stop{0};
extern "C" void on_stop_signal(int sig) {
  if (g_stop.fetch_add(1) > 0) {  // second signal: default action
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}
}  // namespace

void install_stop_handlers() {
  g_stop = 0;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}
bool stop_requested() { return g_stop.load() > 0; }
void request_stop() { g_stop = 1; }

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  f_ = std::fopen(path.c_str(), append ? "a" : "w");
  check(f_ != nullptr, path, ": cannot open the metrics log for writing");
}
MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}
void MetricsLog::write(const nlohmann::json& row) {
  const std::string line = row.dump() + "\n";
  check(std::fwrite(line.data(), 1, line.size(), f_) == line.size() && std::fflush(f_) == 0, path_,
        ": write failed");
}

Autocast::Autocast(bool enabled, c10::DeviceType device, c10::ScalarType dtype) : enabled_(enabled), device_(device) {
  if (!enabled_) return;
  prev_enabled_ = at::autocast::is_autocast_enabled(device_);
  prev_dtype_ = at::autocast::get_autocast_dtype(device_);
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::set_autocast_dtype(device_, dtype);
  at::autocast::increment_nesting();
}
Autocast::~Autocast() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, prev_enabled_);
  at::autocast::set_autocast_dtype(device_, prev_dtype_);
}

}  // namespace rar::training
