// checkpoints.cpp — see checkpoints.h.
#include "training/checkpoints.h"

#include <zlib.h>

#include <ATen/Context.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <cstdlib>

#include <unistd.h>

#include "io/safetensors.h"
#include "util/atomic_file.h"
#include "util/crash_point.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/parse.h"

namespace rar::training {
namespace {

// CRC-32 (zlib) of a text, as a non-negative number for JSON.
int64_t crc32_of(const std::string& s) {
  return static_cast<int64_t>(::crc32(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}



bool is_step_dir(const std::string& name) {
  if (name.size() != 13 || name.compare(0, 5, "step-") != 0) return false;
  return name.find_first_not_of("0123456789", 5) == std::string::npos;
}

}  // namespace

std::string save_checkpoint(const std::string& root, int64_t step, const TrainCheckpoint& ckpt, int64_t keep_last) {
  make_dirs(root);
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", (long long)step);
  const std::string final_dir = join_path(root, name);
  // "<step>.tmp-<pid>": never taken for a checkpoint, and removed by the next run once its writer is gone
  const std::string tmp = join_path(root, std::string(name) + ".tmp-" + std::to_string(::getpid()));
  remove_tree(tmp);
  make_dirs(tmp);
  try {
    io::write_safetensors(join_path(tmp, "model.safetensors"), ckpt.model);
    io::write_safetensors(join_path(tmp, "optimizer.safetensors"), ckpt.optimizer);
    write_file_atomic(join_path(tmp, "config.yaml"), ckpt.config_yaml);
    auto state = ckpt.state;
    state["step"] = step;
    // config.yaml's size and CRC-32: a damaged file is then named as damaged on resume
    state["config_yaml"] = {{"bytes", ckpt.config_yaml.size()}, {"crc32", crc32_of(ckpt.config_yaml)}};
    write_file_atomic(join_path(tmp, "trainer.json"), state.dump(2) + "\n");  // last: marks the folder complete
    fsync_path(tmp);
  } catch (...) {  // e.g. a full disk: the half-written folder goes, the previous checkpoints stay
    remove_tree(tmp);
    throw;
  }
  crash_point("checkpoint.before-rename");
  remove_tree(final_dir);
  const bool renamed = std::rename(tmp.c_str(), final_dir.c_str()) == 0;
  check(renamed, "cannot rename ", tmp, " to ", final_dir, " (", std::strerror(errno), ")");
  crash_point("checkpoint.after-rename");
  fsync_path(root);
  if (keep_last > 0) {
    std::vector<std::string> steps;
    for (const auto& n : list_dir(root))
      if (is_step_dir(n)) steps.push_back(n);
    for (size_t i = 0; i + keep_last < steps.size(); ++i) {
      remove_tree(join_path(root, steps[i]));
      crash_point("checkpoint.pruned");
    }
  }
  return final_dir;
}

std::string latest_checkpoint(const std::string& root) {
  if (!is_directory(root)) return "";
  auto names = list_dir(root);
  for (auto it = names.rbegin(); it != names.rend(); ++it)
    if (is_step_dir(*it) && path_exists(join_path(join_path(root, *it), "trainer.json"))) return join_path(root, *it);
  return "";
}

void check_finite_weights(const io::StateDict& sd, int64_t step) {
  for (const auto& n : sd.names()) {
    const auto& t = sd.at(n);
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
      fail("step ", step, ": weight '", n, "' is not finite (NaN or inf): the learning rate is too high or the data ",
           "is broken; nothing was saved, the last good checkpoint is kept");
  }
}

namespace {

// The config as "dotted.key -> value" pairs of leaves.
void flatten(const nlohmann::json& j, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it) flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
    return;
  }
  out[prefix] = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Keys that steer a run without changing what it computes: free to differ on resume.
bool steers_only(const std::string& key) {
  static const std::set<std::string> keys = {
      "training.max_minutes",  "training.device",          "experiment.output_dir",  "experiment.save_every",
      "experiment.log_every",  "experiment.eval_every",    "experiment.generate_every", "experiment.keep_last",
      "experiment.eval_examples", "experiment.eval_images", "dataset.train_tokens",   "dataset.val_tokens",
      "model.vq_model.pretrained_tokenizer_weight", "data.test", "data.cache_mb", "training.init_from",
      // how the same computation runs (like the device): the captured step is bit-identical to the
      // eager one; the kernels' path changes rounding and the dropout draws as a device does
      "training.cuda_graph", "training.fused_kernels", "experiment.tensorboard"};
  return keys.count(key) > 0;
}

}  // namespace

void check_resume_config(const std::string& dir, const Config& current, const std::set<std::string>& job_checked) {
  const std::string path = join_path(dir, "config.yaml");
  const std::string text = read_file(path, 16u << 20);
  // checkpoints since the record was added know their config's size and CRC
  const std::string tj = join_path(dir, "trainer.json");
  const auto state = path_exists(tj) ? nlohmann::json::parse(read_file(tj, 1 << 20), nullptr, false) : nlohmann::json();
  if (state.is_object() && state.contains("config_yaml") && state["config_yaml"].is_object()) {
    const auto& rec = state["config_yaml"];
    check(rec.value("bytes", int64_t{-1}) == static_cast<int64_t>(text.size()) &&
              rec.value("crc32", int64_t{-1}) == crc32_of(text),
          path, ": damaged (", text.size(), " bytes, CRC ", crc32_of(text), "; the checkpoint recorded ",
          rec.value("bytes", int64_t{-1}), " bytes, CRC ", rec.value("crc32", int64_t{-1}),
          "): restore it, or resume from an earlier checkpoint");
  }
  Config saved;
  try {
    saved = Config::from_yaml(text, path);
  } catch (const Error& e) {
    fail(path, ": damaged (", e.what(), ")");
  }
  std::map<std::string, std::string> a, b;
  flatten(saved.resolved(), "", a);
  flatten(current.resolved(), "", b);
  std::vector<std::string> differ;
  // fp8's scaling keys (training.fp8_scaling, training.fp8_amax_history) compute nothing in a run
  // without fp8: a bf16 run saved under another default resumes
  auto fp8_on = [](const std::map<std::string, std::string>& m) {
    const auto it = m.find("training.fp8");
    return it != m.end() && it->second == "true";
  };
  const bool no_fp8 = !fp8_on(a) && !fp8_on(b);
  auto free = [&](const std::string& k) {
    return steers_only(k) || job_checked.count(k) > 0 || (no_fp8 && k.rfind("training.fp8_", 0) == 0);
  };
  for (const auto& [k, v] : b)
    if (!free(k) && (!a.count(k) || a[k] != v)) differ.push_back(k + ": " + (a.count(k) ? a[k] : "(absent)") + " -> " + v);
  for (const auto& [k, v] : a)
    if (!free(k) && !b.count(k)) differ.push_back(k + ": " + v + " -> (absent)");
  if (differ.empty()) return;
  std::string list;
  for (size_t i = 0; i < differ.size() && i < 5; ++i) list += (i ? "; " : "") + shorten(differ[i], 120);
  if (differ.size() > 5) list += cat("; and ", differ.size() - 5, " more");
  fail(dir, ": --resume with a config that differs from the checkpoint's (", list,
       "). Repeat the run's own settings, or start a new output folder (training.init_from=", dir,
       "/model.safetensors starts from these weights)");
}

void check_fresh_output(const std::string& root, bool resume) {
  if (resume) return;
  const std::string last = latest_checkpoint(root);
  check(last.empty(), root, " already holds the checkpoints of a run (", last,
        "): add --resume to continue it, or choose another output folder");
}

TrainCheckpoint load_checkpoint(const std::string& dir) {
  TrainCheckpoint c;
  check(is_directory(dir), dir, ": not a checkpoint folder");
  c.model = io::read_safetensors(join_path(dir, "model.safetensors"));
  c.optimizer = io::read_safetensors(join_path(dir, "optimizer.safetensors"));
  c.config_yaml = read_file(join_path(dir, "config.yaml"));
  const std::string tj = join_path(dir, "trainer.json");
  try {
    c.state = nlohmann::json::parse(read_file(tj));
  } catch (const nlohmann::json::exception& e) {
    fail(tj, ": not valid JSON: ", e.what());
  }
  check(c.state.contains("step"), tj, ": no 'step'");
  return c;
}

void save_rng_states(io::StateDict& sd, int cuda_device) {
  sd.set("rng.cpu", at::globalContext().defaultGenerator(at::kCPU).get_state().clone());
  if (cuda_device >= 0)
    sd.set("rng.cuda", at::globalContext().defaultGenerator(at::Device(at::kCUDA, cuda_device)).get_state().clone());
}

void load_rng_states(const io::StateDict& sd, int cuda_device) {
  at::Generator cpu = at::globalContext().defaultGenerator(at::kCPU);
  cpu.set_state(sd.at("rng.cpu"));
  if (cuda_device >= 0 && sd.has("rng.cuda")) {
    at::Generator cuda = at::globalContext().defaultGenerator(at::Device(at::kCUDA, cuda_device));
    cuda.set_state(sd.at("rng.cuda"));
  }
}

}  // namespace rar::training
