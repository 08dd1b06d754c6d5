// metrics_log.h — reading the metrics.jsonl files the trainers append to (one flat JSON object
// per line with a numeric "step"), for `rar plot` and for resuming a run.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "io/plot.h"

namespace rar::io {

// Every numeric key's (step, value) series. Malformed lines are one-line errors naming the line.
std::map<std::string, Series> read_metrics(const std::string& path);

// Keeps the rows whose step is <= `step` (a run resumed from the checkpoint at `step` writes the
// later rows again), atomically; a final line cut short by a kill is dropped. No-op when absent.
void truncate_metrics(const std::string& path, int64_t step);

}  // namespace rar::io
