#include "io/metrics_log.h"

#include <nlohmann/json.hpp>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/parse.h"

namespace rar::io {
namespace {

// One row: a flat object (values nested deeper are dropped while parsing, so a hostile line costs
// memory in proportion to what is kept). Returns a discarded value when the line is not JSON.
nlohmann::json parse_row(const std::string& line) {
  auto flat = [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) { return depth <= 1; };
  return nlohmann::json::parse(line, flat, /*allow_exceptions=*/false);
}

template <class F>
void for_each_line(const std::string& text, F&& f) {
  size_t b = 0;
  int64_t n = 0;
  while (b < text.size()) {
    size_t e = text.find('\n', b);
    const bool complete = e != std::string::npos;
    if (!complete) e = text.size();
    f(text.substr(b, e - b), ++n, complete);
    b = e + 1;
  }
}

}  // namespace

std::map<std::string, Series> read_metrics(const std::string& path) {
  std::map<std::string, Series> series;
  for_each_line(read_file(path, 1ull << 30), [&](const std::string& line, int64_t n, bool) {
    if (line.empty()) return;
    const auto row = parse_row(line);
    check(!row.is_discarded() && row.is_object(), path, ":", n, ": not a JSON object");
    check(row.contains("step") && row["step"].is_number(), path, ":", n, ": expected an object with a numeric \"step\"");
    const double step = row["step"].get<double>();
    for (auto it = row.begin(); it != row.end(); ++it) {
      if (it.key() == "step" || !it.value().is_number()) continue;
      auto& s = series[it.key()];
      s.name = it.key();
      s.x.push_back(step);
      s.y.push_back(it.value().get<double>());
    }
  });
  return series;
}

int64_t truncate_metrics(const std::string& path, int64_t step, int64_t max_rows) {
  if (!path_exists(path)) return 0;
  std::string kept;
  int64_t rows = 0;
  bool changed = false;
  for_each_line(read_file(path), [&](const std::string& line, int64_t, bool complete) {
    const auto row = complete ? parse_row(line) : nlohmann::json();
    if (complete && row.is_object() && row.contains("step") && row["step"].is_number() &&
        row["step"].get<double>() <= static_cast<double>(step) && (max_rows < 0 || rows < max_rows)) {
      kept += line + "\n";
      ++rows;
    } else {
      changed = true;
    }
  });
  if (changed) write_file_atomic(path, kept);
  return rows;
}

}  // namespace rar::io
