// `rar info CKPT` — what a checkpoint holds: format, model config, tensor table, parameter count.
// `rar info --preset NAME` — the config and parameter count of a published preset.
// `rar info DATA.rartok` — what a pretokenized dataset holds.
#include <cstdio>
#include <iostream>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "cli/commands.h"
#include "data/token_file.h"
#include "io/checkpoint.h"
#include "model/generator_config.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/atomic_file.h"
#include "util/fs.h"

namespace rar::cli {

static std::string human(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.1fM", n / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

static void print_generator_config(const model::GeneratorConfig& c) {
  std::printf("generator: H=%lld L=%lld heads=%lld (head dim %lld) I=%lld V=%lld C=%lld S=%lld\n",
              (long long)c.hidden, (long long)c.layers, (long long)c.heads, (long long)c.head_dim(),
              (long long)c.mlp, (long long)c.codebook, (long long)c.classes, (long long)c.seq_len);
  std::printf("parameters: %lld (%s)\n", (long long)c.parameter_count(), human(c.parameter_count()).c_str());
}

// `rar info x.rartok`: what a pretokenized dataset holds (the reader validates header, sizes,
// checksum and every id first): counts, sizes, samples per class (named from x.rartok.classes.txt
// when it is there) and how many of the codebook's codes occur.
void print_token_file(const std::string& path) {
  data::TokenFile f(path);
  const auto& i = f.info();
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(i.seq_len))));
  std::printf("file: %s\nformat: rartok (pretokenized dataset; checksum verified)\n", path.c_str());
  std::printf("samples: %lld\ntokens per sample: %lld%s\ncodebook: %lld codes\nclasses: %lld\n", (long long)i.count,
              (long long)i.seq_len, side * side == i.seq_len ? cat(" (", side, "x", side, " grid)").c_str() : "",
              (long long)i.codebook, (long long)i.classes);
  const auto used = torch::bincount(f.tokens().reshape(-1).to(torch::kInt64), {}, i.codebook);
  const int64_t distinct = used.gt(0).sum().item<int64_t>();
  const double top = i.count * i.seq_len > 0 ? used.max().item<double>() / double(i.count * i.seq_len) : 0.0;
  std::printf("codes used: %lld of %lld (the most frequent: %.1f%% of all tokens)\n", (long long)distinct,
              (long long)i.codebook, 100 * top);
  std::vector<std::string> names;
  if (path_exists(path + ".classes.txt")) names = read_lines(path + ".classes.txt");
  const auto per_class = torch::bincount(f.labels().to(torch::kInt64), {}, i.classes);
  std::printf("samples per class:\n");
  for (int64_t c = 0; c < i.classes; ++c)
    std::printf("  %4lld %-24s %lld\n", (long long)c, c < static_cast<int64_t>(names.size()) ? names[c].c_str() : "",
                (long long)per_class[c].item<int64_t>());
}

// Tensor-by-tensor comparison of two checkpoints: the same names and shapes, and per tensor the
// largest |a - b| relative to max |b|. Prints the worst tensors and the overall worst; exits 1 when
// the names or shapes differ or the worst exceeds `tol` (when tol >= 0). Also the whole-model
// figure ||a - b|| / ||b|| over every element (small tensors whose values are mostly noise, e.g.
// biases with zero true gradient, dominate the per-tensor maximum but not this).
int compare(const io::StateDict& a, const io::StateDict& b, const std::string& b_path, double tol) {
  std::vector<std::string> only;
  for (const auto& n : a.names())
    if (!b.has(n)) only.push_back(n + " (only in the first)");
  for (const auto& n : b.names())
    if (!a.has(n)) only.push_back(n + " (only in " + b_path + ")");
  for (const auto& n : only) std::printf("differs: %s\n", n.c_str());
  std::vector<std::pair<double, std::string>> rows;
  bool shapes_ok = only.empty();
  double diff2 = 0, norm2 = 0;
  for (const auto& n : a.names()) {
    if (!b.has(n)) continue;
    const auto x = a.at(n).to(torch::kFloat64), y = b.at(n).to(torch::kFloat64);
    if (x.sizes() != y.sizes()) {
      std::printf("differs: %s shapes\n", n.c_str());
      shapes_ok = false;
      continue;
    }
    const double scale = y.numel() ? y.abs().max().item<double>() : 0.0;
    const double d = x.numel() ? (x - y).abs().max().item<double>() : 0.0;
    rows.emplace_back(scale > 0 ? d / scale : d, n);
    diff2 += (x - y).pow(2).sum().item<double>();
    norm2 += y.pow(2).sum().item<double>();
  }
  std::sort(rows.rbegin(), rows.rend());
  std::printf("%-56s %s\n", "tensor", "max |a-b| / max |b|");
  for (size_t i = 0; i < rows.size() && i < 10; ++i) std::printf("%-56s %.3e\n", rows[i].second.c_str(), rows[i].first);
  const double worst = rows.empty() ? 0.0 : rows.front().first;
  std::printf("whole model: ||a-b|| / ||b|| = %.3e\n", norm2 > 0 ? std::sqrt(diff2 / norm2) : std::sqrt(diff2));
  std::printf("worst: %.3e over %zu tensors%s\n", worst, rows.size(), shapes_ok ? "" : " (names/shapes differ)");
  return shapes_ok && (tol < 0 || worst <= tol) ? 0 : 1;
}

void add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show a checkpoint's format, model config and tensors, or a preset");
  auto path = std::make_shared<std::string>();
  auto preset = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  auto other = std::make_shared<std::string>();
  auto tol = std::make_shared<double>(-1.0);
  cmd->add_option("checkpoint", *path, "checkpoint (.bin/.pt/.pth torch.save zip, or .safetensors), or a .rartok dataset");
  cmd->add_option("--preset", *preset, "show a preset instead: rar_b, rar_l, rar_xl, rar_xxl");
  cmd->add_flag("--no-tensors", *quiet, "omit the tensor table");
  cmd->add_option("--compare", *other, "compare with this checkpoint: per-tensor max relative difference");
  cmd->add_option("--tol", *tol, "with --compare: exit 1 when the worst relative difference exceeds this")->check(non_negative());
  cmd->callback([=] {
    check(!path->empty() != !preset->empty(), "info: give either a checkpoint or --preset");
    if (!preset->empty()) {
      const auto cfg = model::GeneratorConfig::preset(*preset);
      print_generator_config(cfg);
      if (auto d = model::published_sampling(cfg))
        std::printf("sampling (%s): --cfg %g --cfg-power %g --temperature %g\n", d->source.c_str(), d->cfg,
                    d->cfg_power, d->temperature);
      return;
    }
    if (!other->empty()) {
      const int rc = compare(io::read_checkpoint(*path), io::read_checkpoint(*other), *other, *tol);
      if (rc != 0) std::exit(rc);
      return;
    }
    if (has_suffix(*path, ".rartok")) return print_token_file(*path);
    auto format = io::detect_checkpoint_format(*path);
    io::StateDict sd = io::read_checkpoint(*path);
    std::printf("file: %s\nformat: %s\ntensors: %zu\n", path->c_str(), io::format_name(format), sd.size());
    for (auto& [k, v] : sd.metadata) std::printf("metadata %s: %s\n", k.c_str(), v.c_str());
    if (model::is_generator_state_dict(sd)) {
      const auto cfg = model::GeneratorConfig::infer(sd);
      print_generator_config(cfg);
      if (auto d = model::sampling_defaults(sd, cfg))
        std::printf("sampling (%s): --cfg %g --cfg-power %g --temperature %g\n", d->source.c_str(), d->cfg,
                    d->cfg_power, d->temperature);
      else
        std::printf("sampling: no settings of its own (rar sample: --cfg 4 --cfg-power 0 --temperature 1)\n");
    } else {
      std::printf("model: unrecognised state dict\nparameters: %lld (%s)\n", (long long)sd.numel(),
                  human(sd.numel()).c_str());
    }
    if (*quiet) return;
    std::printf("\n%-56s %-9s %s\n", "name", "dtype", "shape");
    for (const auto& n : sd.names()) {
      const auto& t = sd.at(n);
      std::ostringstream shape;
      shape << t.sizes();
      std::printf("%-56s %-9s %s\n", n.c_str(), c10::toString(t.scalar_type()), shape.str().c_str());
    }
  });
}

}  // namespace rar::cli
