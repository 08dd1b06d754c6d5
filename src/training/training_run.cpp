// training_run.cpp — see training_run.h.
#include "training/training_run.h"

#include "io/event_file.h"
#include "io/image.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "io/metrics_log.h"
#include "training/optim_config.h"
#include "training/run_support.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::training {

RunSettings RunSettings::from(const Config& cfg) {
  RunSettings s;
  s.output_dir = cfg.get_string("experiment.output_dir");
  check(!s.output_dir.empty(), "experiment.output_dir is empty");
  s.lr = lr_schedule(cfg);
  check(s.lr.total_steps > 0, "training.max_train_steps must be positive, got ", s.lr.total_steps);
  s.log_every = std::max<int64_t>(1, cfg.get_int("experiment.log_every"));
  s.eval_every = cfg.get_int("experiment.eval_every");
  s.generate_every = cfg.get_int("experiment.generate_every");
  s.save_every = cfg.get_int("experiment.save_every");
  s.keep_last = cfg.get_int("experiment.keep_last");
  s.tensorboard = cfg.get_bool("experiment.tensorboard", true);
  s.max_minutes = cfg.get_double("training.max_minutes");
  s.max_grad_norm = cfg.get_double("training.max_grad_norm");
  s.seed = static_cast<uint64_t>(cfg.get_int("training.seed"));
  s.device = cfg.get_string("training.device");
  const std::string mp = cfg.get_string("training.mixed_precision");
  check(mp == "no" || mp == "fp32" || mp == "bf16", "training.mixed_precision: expected no or bf16, got '", mp, "'");
  s.bf16 = mp == "bf16";
  s.tf32 = cfg.get_bool("training.enable_tf32");
  return s;
}

std::string RunSettings::checkpoint_root() const { return join_path(output_dir, "checkpoints"); }

OutputLock prepare_run_folder(const RunSettings& s, bool resume, bool main) {
  OutputLock lock;
  if (main) {
    check(!path_exists(s.output_dir) || is_directory(s.output_dir), s.output_dir,
          ": is a file; expected the run's output folder");
    make_dirs(s.output_dir);
    lock = OutputLock(join_path(s.output_dir, ".lock"), s.output_dir);
    remove_stale_temp_files(s.output_dir);  // left by a run killed mid-write
    remove_stale_temp_files(s.checkpoint_root());
  }
  check_fresh_output(s.checkpoint_root(), resume);
  return lock;
}

void run_training(const RunSettings& s, const Config& cfg, TrainingJob& job, const RunControl& control) {
  using clock = std::chrono::steady_clock;
  auto seconds_since = [](clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); };
  const bool main = job.is_main();
  const std::string ckpt_root = s.checkpoint_root(), metrics_path = join_path(s.output_dir, "metrics.jsonl");
  const int64_t total = s.total_steps();

  // ---------------------------------------------------------------- resume
  // Only the main rank reads the checkpoint (from its own output folder); the job shares it.
  std::string latest;
  std::unique_ptr<TrainCheckpoint> ck;
  if (main && control.resume) {
    latest = latest_checkpoint(ckpt_root);
    if (latest.empty()) std::fprintf(stderr, "no checkpoint in %s: starting from scratch\n", ckpt_root.c_str());
    else {
      // the log starts with the run, so a resumed run without it has lost its history
      check(path_exists(metrics_path), metrics_path, ": missing, but the run resumes from ", latest,
            ": its history up to there would be lost; restore the file (or create an empty one to continue without it)");
      check_resume_config(latest, cfg, job.resume_checked_keys());
      ck = std::make_unique<TrainCheckpoint>(load_checkpoint(latest));
    }
  }
  // What the logs held when the checkpoint was written (-1: a checkpoint without the count): rows
  // and records after it come again, also those of its own step that the end of a run writes.
  const int64_t logged_rows = ck ? ck->state.value("log_rows", int64_t{-1}) : -1;
  const int64_t logged_records = ck ? ck->state.value("log_event_records", int64_t{-1}) : -1;
  // where the log window the checkpoint fell into began (the job restores that window's sums)
  const int64_t resumed_window_start = ck ? ck->state.value("log_window_start", int64_t{-1}) : -1;
  int64_t step = job.resume(ck.get(), latest);
  ck.reset();
  int64_t rows_kept = 0;
  if (!latest.empty()) {
    rows_kept = io::truncate_metrics(metrics_path, step, logged_rows);
    std::fprintf(stderr, "resumed from %s (step %lld)\n", latest.c_str(), (long long)step);
  }
  const std::string config_yaml = cfg.to_yaml();
  std::unique_ptr<MetricsLog> metrics;
  std::unique_ptr<io::EventFileWriter> events;  // TensorBoard, beside metrics.jsonl
  if (main) {
    write_file_atomic(join_path(s.output_dir, "config.yaml"), config_yaml);
    metrics = std::make_unique<MetricsLog>(metrics_path, !latest.empty(), rows_kept);
    if (s.tensorboard && io::event_files_available())
      events = std::make_unique<io::EventFileWriter>(join_path(s.output_dir, "tensorboard"), latest.empty() ? -1 : step,
                                                     logged_records);
    else if (s.tensorboard)
      std::fprintf(stderr, "rar: this build writes no TensorBoard event files (protobuf, ISA-L missing): metrics.jsonl only\n");
  }
  auto write_row = [&](int64_t at, nlohmann::json row) {
    if (!metrics || row.is_null()) return;
    row["step"] = at;
    metrics->write(row);
    if (!events) return;
    std::vector<std::pair<std::string, double>> scalars;
    for (const auto& [k, v] : row.items())
      if (v.is_number() && k != "step") scalars.emplace_back(k, v.get<double>());
    events->scalars(at, scalars);
    events->flush();
  };
  // grids written by the job: into the event file as images
  auto generate = [&](int64_t at) {
    for (const auto& [tag, png] : job.generate(at)) {
      if (!events || !path_exists(png)) continue;
      const auto img = io::read_image(png);
      events->image(at, tag, read_file(png), static_cast<int>(img.size(0)), static_cast<int>(img.size(1)),
                    static_cast<int>(img.size(2)));
      events->flush();
    }
  };

  // ---------------------------------------------------------------- save
  int64_t window_start = step;  // the first step of the current log window
  if (resumed_window_start >= 0 && resumed_window_start <= step) window_start = resumed_window_start;
  // Every rank checks the weights (they hold the same ones, so they take the same decision); the
  // checkpoint comes first, so the exported weights never get ahead of what --resume restores.
  auto save = [&](int64_t at) -> std::string {
    check_finite_weights(job.weights(), at);
    TrainCheckpoint ck = job.checkpoint(at);
    std::string where;
    if (main) {
      ck.config_yaml = config_yaml;
      ck.state["log_rows"] = metrics->rows();
      ck.state["log_window_start"] = window_start;
      if (events) ck.state["log_event_records"] = events->records();
      where = save_checkpoint(ckpt_root, at, ck, s.keep_last);
      job.export_weights();
    }
    job.barrier();
    return where;
  };

  // ---------------------------------------------------------------- loop
  if (main) job.describe();
  install_stop_handlers();
  const int64_t first_step = step;
  std::unique_ptr<Progress> progress;
  if (main) progress = std::make_unique<Progress>(job.name(), total, "step", step);
  const auto t0 = clock::now();
  auto t_window = t0;
  auto local_flags = [&](int64_t steps_done) {
    StopFlags f;
    f.interrupt = stop_requested() || (control.stop_after > 0 && steps_done - first_step >= control.stop_after);
    f.out_of_time = s.max_minutes > 0 && seconds_since(t0) > 60 * s.max_minutes;
    return f;
  };
  StopFlags flags;
  while (step < total) {
    if (!job.agrees_on_stop()) flags = local_flags(step);
    if (flags.any()) break;
    const StepStats st = job.gradients(step, [&] { return local_flags(step + 1); });
    if (job.agrees_on_stop()) flags = st.agreed;
    if (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm)) {
      const std::string last = latest_checkpoint(ckpt_root);
      fail("step ", step, ": loss is ", st.loss, " (gradient norm ", st.grad_norm,
           "); stopped without updating. Last good checkpoint: ", last.empty() ? std::string("none") : last,
           " (lower optimizer.params.learning_rate, then --resume)");
    }
    job.update(step);
    ++step;

    if (step % s.log_every == 0 || step == total) {
      const LogWindow w{step - window_start, seconds_since(t_window), seconds_since(t0)};
      LogLine line = job.log_window(step, w);
      if (main) {
        line.row["elapsed_s"] = w.elapsed;
        write_row(step, std::move(line.row));
        progress->update(step, line.progress);
      }
      window_start = step;
      t_window = clock::now();
    }
    // Periodic work, except at the last scheduled step (the end of the run does it once).
    if (step == total) break;
    if (main && s.eval_every > 0 && step % s.eval_every == 0) write_row(step, job.evaluate(step, false));
    if (main && s.generate_every > 0 && step % s.generate_every == 0) generate(step);
    if (s.save_every > 0 && step % s.save_every == 0) save(step);
  }
  if (progress) {
    progress->update(step);
    progress->finish();
  }

  // ---------------------------------------------------------------- end
  const std::string where = save(step);
  if (step < total && flags.interrupt) {
    if (main) std::fprintf(stderr, "stopped at step %lld: checkpoint %s\nresume with the same command and --resume\n",
                           (long long)step, where.c_str());
    return;
  }
  if (!main) return;
  if (step < total)
    std::fprintf(stderr, "time budget of %.1f min reached at step %lld of %lld: checkpoint %s (--resume continues)\n",
                 s.max_minutes, (long long)step, (long long)total, where.c_str());
  else
    std::fprintf(stderr, "finished at step %lld: checkpoint %s\n", (long long)step, where.c_str());
  const double minutes = seconds_since(t0) / 60.0;
  nlohmann::json row = job.evaluate(step, true);
  if (!row.is_null()) row["minutes"] = minutes;
  write_row(step, std::move(row));
  generate(step);
  job.finish(step, minutes);
}

}  // namespace rar::training
