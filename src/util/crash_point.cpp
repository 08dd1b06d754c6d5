#include "util/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace rar {
namespace {

struct Settings {
  long long kill_at = 0;  // 0: never
  const char* log = nullptr;
  bool active = false;
};

const Settings& settings() {
  static const Settings s = [] {
    Settings s;
    if (const char* at = std::getenv("RAR_CRASH_AT")) s.kill_at = std::atoll(at);
    if (const char* log = std::getenv("RAR_CRASH_LOG"); log && *log) s.log = log;
    s.active = s.kill_at > 0 || s.log;
    return s;
  }();
  return s;
}

std::atomic<long long> g_reached{0};
std::mutex g_log_mutex;

}  // namespace

void crash_point(const char* name) {
  const Settings& s = settings();
  if (!s.active) return;
  const long long n = ++g_reached;
  if (s.log) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (std::FILE* f = std::fopen(s.log, "a")) {
      std::fprintf(f, "%lld %s\n", n, name);
      std::fclose(f);
    }
  }
  if (n == s.kill_at) {
    char msg[256];
    const int len = std::snprintf(msg, sizeof msg, "crash point %lld: %s\n", n, name);
    if (len > 0) (void)!::write(2, msg, std::min<size_t>(static_cast<size_t>(len), sizeof msg - 1));
    ::kill(::getpid(), SIGKILL);
  }
}

}  // namespace rar
