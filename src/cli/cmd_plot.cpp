// `rar plot metrics.jsonl --out curves.png` — training curves from a metrics log: one panel per
// quantity (loss with validation NLL, accuracy, lr, randomness r, ...), x axis = step. Several logs
// draw their runs in the same panels (one line per run, named by --labels or the run's folder).
#include <cmath>
#include <map>
#include <sstream>

#include "cli/commands.h"
#include "io/metrics_log.h"
#include "io/plot.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::cli {
namespace {

struct Spec {
  std::string title;
  std::vector<std::string> keys;
  bool log_y;
};

// Panels in this order when their keys are present; anything else numeric follows.
const std::vector<Spec> kKnown = {
    {"loss (nats/token)", {"loss", "val/nll"}, false},
    {"token accuracy", {"accuracy"}, false},
    {"learning rate", {"lr"}, false},
    {"randomness r", {"randomness"}, false},
    {"gradient norm", {"grad_norm"}, false},
    {"PSNR (dB)", {"psnr", "eval/psnr"}, false},
    {"codes used", {"codes_used", "eval/codes_used"}, false},
    {"tokens/s", {"tokens_per_s"}, false},
};

// A run's default name: the folder of a `metrics.jsonl`, else the file name without `.jsonl` (and
// without a `-metrics` ending: `raster-metrics.jsonl` is "raster").
std::string run_name(const std::string& path) {
  std::string file = basename_of(path);
  if (file == "metrics.jsonl") {
    const std::string dir = basename_of(parent_dir(path));  // "." or "" when there is no folder to name it
    if (!dir.empty() && dir != ".") return dir;
  }
  for (const std::string end : {".jsonl", "-metrics"})
    if (file.size() > end.size() && has_suffix(file, end))
      file.resize(file.size() - end.size());
  return file;
}

}  // namespace

void add_plot(CLI::App& app) {
  struct Args {
    std::vector<std::string> metrics;
    std::string out, keys, labels;
    int columns = 2;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("plot", "Training curves from metrics.jsonl to a PNG (several logs: runs compared)");
  c->add_option("metrics", a->metrics,
                "metrics.jsonl written by rar train / train-tokenizer; several to draw the runs in the same panels")
      ->required();
  c->add_option("--out", a->out, "curves.png")->required();
  c->add_option("--keys", a->keys, "comma-separated keys, one panel each (default: the known ones present)");
  c->add_option("--labels", a->labels, "comma-separated run names, one per log (default: each log's folder or file name)");
  c->add_option("--columns", a->columns, "panels per row")->check(positive_count());
  c->callback([a] {
    struct Run {
      std::string name, path;
      std::map<std::string, io::Series> series;  // key -> (steps, values)
    };
    std::vector<Run> runs;
    std::vector<std::string> labels;
    if (!a->labels.empty()) {
      std::stringstream ls(a->labels);
      for (std::string l; std::getline(ls, l, ',');) labels.push_back(l);
      check(labels.size() == a->metrics.size(), "--labels: ", labels.size(), " names for ", a->metrics.size(), " logs");
    }
    for (size_t i = 0; i < a->metrics.size(); ++i) {
      Run r{labels.empty() ? run_name(a->metrics[i]) : labels[i], a->metrics[i], io::read_metrics(a->metrics[i])};
      check(!r.series.empty(), r.path, ": no metrics rows");
      runs.push_back(std::move(r));
    }
    const bool compare = runs.size() > 1;
    // One panel: each run's series of these keys (named by key alone for one run; by run, and key
    // where the panel has several, when runs are compared).
    auto panel = [&](const std::string& title, const std::vector<std::string>& keys, bool log_y) {
      io::Panel p{title, {}, log_y};
      for (const auto& r : runs)
        for (const auto& k : keys) {
          auto it = r.series.find(k);
          if (it == r.series.end()) continue;
          io::Series s = it->second;
          if (compare) s.name = keys.size() > 1 ? r.name + " " + k : r.name;
          p.series.push_back(std::move(s));
        }
      return p;
    };
    std::vector<io::Panel> panels;
    if (!a->keys.empty()) {
      std::stringstream ks(a->keys);
      for (std::string k; std::getline(ks, k, ',');) {
        auto p = panel(k, {k}, false);
        check(!p.series.empty(), runs.size() == 1 ? runs[0].path : std::string("the logs"), ": no key '", k, "'");
        panels.push_back(std::move(p));
      }
    } else {
      for (const auto& spec : kKnown) {
        auto p = panel(spec.title, spec.keys, spec.log_y);
        if (!p.series.empty()) panels.push_back(std::move(p));
      }
    }
    io::write_plot_png(a->out, panels, a->columns);
    std::fprintf(stderr, "wrote %s (%zu panels)\n", a->out.c_str(), panels.size());
  });
}

}  // namespace rar::cli
