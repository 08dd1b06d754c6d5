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
// later rows again), and of them at most the first `max_rows` when it is >= 0 (the rows the log held
// when the checkpoint was written: the end of a run writes rows of the checkpoint's own step after
// it), atomically; a final line cut short by a kill is dropped. Returns the rows kept (0 when absent).
int64_t truncate_metrics(const std::string& path, int64_t step, int64_t max_rows = -1);

}  // namespace rar::io
