// training_run.h — the skeleton every training run shares (`rar train`, `rar train-tokenizer`):
// the run folder, resume, the step loop with one meaning for every stop condition, log windows,
// checkpoints and the end of the run. A trainer supplies its model-specific pieces as a
// TrainingJob; the loop below decides when each runs.
//
//   prepare_run_folder              output folder, stale temp files removed, no fresh run over
//                                   another run's checkpoints
//   run_training:
//     resume                        newest complete checkpoint (config checked) -> job.restore
//     loop while step < total:
//       stop?                       interrupt (signal, --stop-after) or time budget (max_minutes)
//       job.gradients(step)         the step's loss and gradients; NaN/inf stops before any update
//       job.update(step)            the optimizer step
//       log window                  every log_every steps and at the last: job.log_window -> metrics.jsonl + progress
//       periodic evaluate / generate / save (every *_every steps, not at the last scheduled step)
//     save                          always (the checkpoint first, then the exported weights)
//     interrupted: stop here        ("resume with the same command and --resume")
//     else (finished or time budget): final evaluate, generate, job.finish
//
// Stop conditions, the same in every trainer:
//   - SIGINT/SIGTERM or --stop-after N: the run is interrupted — checkpoint, nothing else.
//   - training.max_minutes: the time budget ends the run like the end of the schedule (checkpoint,
//     final evaluation and grids), and --resume continues it to max_train_steps.
//   - a non-finite loss or gradient norm: a one-line error before the update, naming the last
//     good checkpoint; nothing is saved.
#pragma once
#include <cstdint>
#include <functional>
#include <set>
#include <utility>
#include <vector>
#include <string>

#include <nlohmann/json.hpp>

#include "io/state_dict.h"
#include "training/checkpoints.h"
#include "training/config.h"
#include "training/schedule.h"
#include "util/output_lock.h"

namespace rar::training {

// What every run reads from its config, once.
struct RunSettings {
  std::string output_dir;   // experiment.output_dir
  LrSchedule lr;            // lr_scheduler.*, optimizer.params.learning_rate, training.max_train_steps
  int64_t log_every = 1, eval_every = 0, generate_every = 0, save_every = 0, keep_last = 0;  // experiment.*
  double max_minutes = 0;   // training.max_minutes (0 = no budget)
  bool tensorboard = true;  // experiment.tensorboard: event files in DIR/tensorboard (io/event_file.h)
  double max_grad_norm = 0; // training.max_grad_norm
  uint64_t seed = 0;        // training.seed
  std::string device;       // training.device
  bool bf16 = false;        // training.mixed_precision == bf16 (autocast applies on CUDA only)
  bool tf32 = true;         // training.enable_tf32

  static RunSettings from(const Config& cfg);
  int64_t total_steps() const { return lr.total_steps; }
  std::string checkpoint_root() const;  // <output_dir>/checkpoints
};

// How the CLI steers a run.
struct RunControl {
  bool resume = false;
  int64_t stop_after = 0;  // > 0: interrupt after this many steps of this invocation (checkpointed)
};

// Why the loop stops before max_train_steps (see the top of this file).
struct StopFlags {
  bool interrupt = false, out_of_time = false;
  bool any() const { return interrupt || out_of_time; }
};

// One step's numbers, read back once.
struct StepStats {
  double loss = 0, grad_norm = 0;
  StopFlags agreed;  // distributed jobs: every rank's stop flags combined (see TrainingJob::gradients)
};

// The measured window a log line covers.
struct LogWindow {
  int64_t steps = 0;     // optimizer steps in the window
  double seconds = 0;    // its wall time
  double elapsed = 0;    // seconds since the loop started
};

// A log line: the metrics row (the loop adds "step") and the progress text.
struct LogLine {
  nlohmann::json row = nlohmann::json::object();
  std::string progress;
};

// A trainer's model-specific pieces. Distributed jobs run every call on every rank; the loop
// writes files and prints only where is_main().
class TrainingJob {
 public:
  virtual ~TrainingJob() = default;
  virtual std::string name() const = 0;  // progress label: "train", "train-tokenizer"
  virtual bool is_main() const { return true; }
  // Distributed jobs agree on stopping through the step's read-back (StepStats::agreed).
  virtual bool agrees_on_stop() const { return false; }
  virtual void barrier() {}

  // Continue from a complete checkpoint: weights, optimizer, RNG streams, data position, trainer state.
  virtual void restore(const TrainCheckpoint& ck, const std::string& dir) = 0;
  // Called on every rank at the start of the run with the checkpoint the main rank read from its
  // own output folder (null: a fresh run; other ranks always get null, so that no folder needs to be
  // shared): continues from it and returns its step (0 for a fresh run). Distributed jobs share it
  // through their process group; the default restores it locally.
  virtual int64_t resume(const TrainCheckpoint* ck, const std::string& dir) {
    if (!ck) return 0;
    restore(*ck, dir);
    return ck->state.at("step").get<int64_t>();
  }
  // Config keys the job checks itself on resume (free to differ in config.yaml; e.g. the per-process
  // batch and accumulation, which may change with the number of processes if the global batch stays).
  virtual std::set<std::string> resume_checked_keys() const { return {}; }
  // Called once before the loop, after any restore (the start-of-run summary line).
  virtual void describe() const {}
  // The gradients of step `step` (nothing updated yet). `local_flags()` is this process's stop
  // decision after the step; a job that agrees_on_stop() combines it across ranks in the step's
  // read-back and returns the result in StepStats::agreed.
  virtual StepStats gradients(int64_t step, const std::function<StopFlags()>& local_flags) = 0;
  // The optimizer step at learning-rate schedule step `step` (and what follows it: EMA, code restarts).
  virtual void update(int64_t step) = 0;
  // The log line for the window just ended; the job resets its own accumulators.
  virtual LogLine log_window(int64_t step, const LogWindow& w) = 0;

  // The weights as saved (checked for NaN/inf before anything is written).
  virtual io::StateDict weights() const = 0;
  // Everything a resume needs (the loop adds config.yaml and the step). Collective for
  // distributed jobs; only the main rank's result is written.
  virtual TrainCheckpoint checkpoint(int64_t step) = 0;
  // The run's exported weights (generator.safetensors, tokenizer.safetensors), main rank only.
  virtual void export_weights() = 0;

  // Evaluation (metrics rows are returned; `final`: the end of the run), sample or
  // reconstruction grids, and the end-of-run summary. Defaults: none.
  virtual nlohmann::json evaluate(int64_t step, bool final) { return nullptr; }
  // Writes its grid(s) and returns them as (tag, PNG path) for the event file.
  virtual std::vector<std::pair<std::string, std::string>> generate(int64_t step) { return {}; }
  virtual void finish(int64_t step, double minutes) {}
};

// Creates the output folder, takes its lock (DIR/.lock, util/output_lock.h: a second process on
// the same folder is refused naming the first's pid) for the returned object's lifetime, removes
// temp files a killed run left, and refuses a fresh run (no --resume) over another run's
// checkpoints. Call before loading data or building the model; keep the lock for the run.
OutputLock prepare_run_folder(const RunSettings& s, bool resume, bool main = true);

// The run: resume, loop, save, final evaluation (see the top of this file).
void run_training(const RunSettings& s, const Config& cfg, TrainingJob& job, const RunControl& control);

}  // namespace rar::training
