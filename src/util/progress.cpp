#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

namespace rar {

Progress::Progress(std::string label, int64_t total, std::string unit, int64_t start)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), start_(start), done_(start),
      t0_(std::chrono::steady_clock::now()), last_print_(t0_), tty_(::isatty(2)) {}

double Progress::rate() const {
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  return s > 0 ? (done_ - start_) / s : 0.0;
}

void Progress::update(int64_t done, const std::string& extra) {
  done_ = done;
  extra_ = extra;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  if (since >= (tty_ ? 0.2 : 5.0)) {
    last_print_ = now;
    print(false);
  }
}

void Progress::finish(const std::string& extra) {
  if (!extra.empty()) extra_ = extra;
  print(true);
}

static std::string hms(double s) {
  char buf[32];
  long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

void Progress::print(bool final) {
  double r = rate();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  double pct = total_ > 0 ? 100.0 * done_ / total_ : 100.0;
  std::string eta = final ? "took " + hms(elapsed) : (r > 0 ? "ETA " + hms((total_ - done_) / r) : "ETA --:--");
  std::fprintf(stderr, "%s%s %lld/%lld [%3.0f%%] %.1f %s/s %s%s%s%s", tty_ ? "\r\033[K" : "", label_.c_str(),
               (long long)done_, (long long)total_, pct, r, unit_.c_str(), eta.c_str(), extra_.empty() ? "" : "  ",
               extra_.c_str(), (final || !tty_) ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace rar
