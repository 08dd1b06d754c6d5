// run_support.cpp — see run_support.h.
#include "training/run_support.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "util/crash_point.h"
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

MetricsLog::MetricsLog(const std::string& path, bool append, int64_t rows) : path_(path), rows_(append ? rows : 0) {
  f_ = std::fopen(path.c_str(), append ? "a" : "w");
  check(f_ != nullptr, path, ": cannot open the metrics log for writing");
}
MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}
void MetricsLog::write(const nlohmann::json& row) {
  const std::string line = row.dump() + "\n";
  const bool ok = std::fwrite(line.data(), 1, line.size(), f_) == line.size() && std::fflush(f_) == 0;
  check(ok, path_, ": write failed (", std::strerror(errno), ")");
  ++rows_;
  crash_point("metrics.row");
}

}  // namespace rar::training
