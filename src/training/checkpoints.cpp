// checkpoints.cpp — see checkpoints.h.
#include "training/checkpoints.h"

#include <ATen/Context.h>

#include <cstdio>
#include <cstdlib>

#include <unistd.h>

#include "io/safetensors.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::training {
namespace {

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
  const std::string tmp = join_path(root, std::string(".tmp-") + name + "-" + std::to_string(::getpid()));
  remove_tree(tmp);
  make_dirs(tmp);
  io::write_safetensors(join_path(tmp, "model.safetensors"), ckpt.model);
  io::write_safetensors(join_path(tmp, "optimizer.safetensors"), ckpt.optimizer);
  write_file_atomic(join_path(tmp, "config.yaml"), ckpt.config_yaml);
  auto state = ckpt.state;
  state["step"] = step;
  write_file_atomic(join_path(tmp, "trainer.json"), state.dump(2) + "\n");  // last: marks the folder complete
  remove_tree(final_dir);
  check(std::rename(tmp.c_str(), final_dir.c_str()) == 0, "cannot rename ", tmp, " to ", final_dir);
  if (keep_last > 0) {
    std::vector<std::string> steps;
    for (const auto& n : list_dir(root))
      if (is_step_dir(n)) steps.push_back(n);
    for (size_t i = 0; i + keep_last < steps.size(); ++i) remove_tree(join_path(root, steps[i]));
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
