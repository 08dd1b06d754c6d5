// `rar plot metrics.jsonl --out curves.png` — training curves from a metrics log: one panel per
// quantity (loss with validation NLL, accuracy, lr, randomness r, ...), x axis = step.
#include <cmath>
#include <map>
#include <sstream>

#include "cli/commands.h"
#include "io/metrics_log.h"
#include "io/plot.h"
#include "util/atomic_file.h"
#include "util/error.h"

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

}  // namespace

void add_plot(CLI::App& app) {
  struct Args {
    std::string metrics, out, keys;
    int columns = 2;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("plot", "Training curves from metrics.jsonl to a PNG");
  c->add_option("metrics", a->metrics, "metrics.jsonl written by rar train / train-tokenizer")->required();
  c->add_option("--out", a->out, "curves.png")->required();
  c->add_option("--keys", a->keys, "comma-separated keys, one panel each (default: the known ones present)");
  c->add_option("--columns", a->columns, "panels per row")->check(positive_count());
  c->callback([a] {
    auto series = io::read_metrics(a->metrics);  // key -> (steps, values)
    check(!series.empty(), a->metrics, ": no metrics rows");
    std::vector<io::Panel> panels;
    if (!a->keys.empty()) {
      std::stringstream ks(a->keys);
      for (std::string k; std::getline(ks, k, ',');) {
        check(series.count(k), a->metrics, ": no key '", k, "'");
        panels.push_back({k, {series[k]}, false});
      }
    } else {
      for (const auto& spec : kKnown) {
        io::Panel p{spec.title, {}, spec.log_y};
        for (const auto& k : spec.keys)
          if (series.count(k)) p.series.push_back(series[k]);
        if (!p.series.empty()) panels.push_back(p);
      }
    }
    io::write_plot_png(a->out, panels, a->columns);
    std::fprintf(stderr, "wrote %s (%zu panels)\n", a->out.c_str(), panels.size());
  });
}

}  // namespace rar::cli
