// scheduler.cpp — see scheduler.h.
#include "serve/scheduler.h"

#include <algorithm>
#include <cstdio>

#include "util/error.h"

namespace rar::serve {

// ---------------------------------------------------------------- Job

std::vector<GeneratedImage> Job::wait_for_more(size_t have) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] {
    return images_.size() > have || !error_.empty() || cancelled_ ||
           static_cast<int64_t>(images_.size()) == static_cast<int64_t>(request.classes.size());
  });
  return images_;
}

std::vector<GeneratedImage> Job::images_after(size_t have) {
  std::lock_guard<std::mutex> lock(mu_);
  if (have >= images_.size()) return {};
  return std::vector<GeneratedImage>(images_.begin() + static_cast<std::ptrdiff_t>(have), images_.end());
}

void Job::set_listener(std::function<void()> f) {
  bool now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    listener_ = std::move(f);
    now = !images_.empty() || !error_.empty();
  }
  if (now) notify();
}

void Job::notify() {
  std::function<void()> f;
  {
    std::lock_guard<std::mutex> lock(mu_);
    f = listener_;
  }
  if (f) f();
}

std::string Job::error() {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void Job::cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  cv_.notify_all();
}

bool Job::cancelled() {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

void Job::deliver(std::vector<GeneratedImage> images) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& im : images) images_.push_back(std::move(im));
    std::sort(images_.begin(), images_.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
    cv_.notify_all();
  }
  notify();
}

void Job::fail_with(const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.empty()) error_ = message;
    cv_.notify_all();
  }
  notify();
}

// ---------------------------------------------------------------- scheduler

BatchScheduler::BatchScheduler(model::Generator g, std::optional<model::VQModel> vq, SchedulerOptions opts)
    : g_(std::move(g)), vq_(std::move(vq)), opts_(std::move(opts)), sampler_(g_, opts_.engine) {
  check(opts_.max_batch > 0 && opts_.max_wait_ms >= 0 && opts_.queue > 0, "serve: bad batching limits");
  int64_t buckets = 1;
  for (int64_t b = 1; b < opts_.max_batch; b *= 2) ++buckets;
  stats_.batch_sizes.assign(buckets, 0);
  if (vq_) {
    decoder_ = std::make_unique<sampling::DecodePipeline>(*vq_, opts_.decode_batch);
    overlapped_ = (*vq_)->quantize->embedding->weight.device().is_cuda();
  }
  opts_.pad_rows = opts_.pad_rows && sampler_.engine() == sampling::EngineKind::Graph;
  worker_ = std::thread([this] { run(); });
  if (overlapped_) deliverer_ = std::thread([this] { deliver_loop(); });
}

BatchScheduler::~BatchScheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    out_stopping_ = true;
  }
  out_cv_.notify_all();
  if (deliverer_.joinable()) deliverer_.join();  // hands out what was generated
  for (auto& c : queue_) c.job->fail_with("the server is shutting down");
}

std::shared_ptr<Job> BatchScheduler::submit(GenerateRequest r) {
  const int64_t n = static_cast<int64_t>(r.classes.size());
  auto job = std::make_shared<Job>(std::move(r));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queued_images_ + n > opts_.queue || accepting_stopped_) {
      ++stats_.rejected;
      return nullptr;
    }
    ++stats_.requests;
    const auto now = clock_type::now();
    for (int64_t first = 0, j = 0; first < n; first += opts_.max_batch, ++j)
      queue_.push_back(Chunk{job, first, std::min(opts_.max_batch, n - first),
                             job->request.opts.seed + static_cast<uint64_t>(j), now});
    queued_images_ += n;
    stats_.queued_images = queued_images_;
  }
  cv_.notify_all();
  return job;
}

void BatchScheduler::stop_accepting(const std::string& message) {
  std::vector<std::shared_ptr<Job>> failed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_stopped_ = true;
    for (auto& c : queue_) failed.push_back(c.job);
    queue_.clear();
    queued_images_ = 0;
    stats_.queued_images = 0;
  }
  for (auto& j : failed) j->fail_with(message);  // outside the lock: a job's listener may post work
}

SchedulerStats BatchScheduler::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BatchScheduler::run() {
  for (;;) {
    std::vector<Chunk> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      // Wait (at most max_wait_ms after the oldest chunk arrived) for the batch to fill.
      const auto deadline = queue_.front().queued + std::chrono::milliseconds(opts_.max_wait_ms);
      auto rows_waiting = [&] {
        int64_t r = 0;
        for (const auto& c : queue_) r += c.n;
        return r;
      };
      cv_.wait_until(lock, deadline, [&] { return stopping_ || rows_waiting() >= opts_.max_batch; });
      if (stopping_) return;
      // Whole chunks in arrival order while they fit; cancelled requests' chunks are dropped.
      int64_t rows = 0;
      while (!queue_.empty()) {
        auto& c = queue_.front();
        if (c.job->cancelled()) {
          queued_images_ -= c.n;
          stats_.cancelled_rows += c.n;
          queue_.pop_front();
          continue;
        }
        if (rows + c.n > opts_.max_batch) break;
        rows += c.n;
        queued_images_ -= c.n;
        batch.push_back(std::move(c));
        queue_.pop_front();
      }
      stats_.queued_images = queued_images_;
    }
    if (!batch.empty()) serve_batch(std::move(batch));
  }
}

namespace {

// The row count a batch of `rows` is padded to: 1, 2, 4, ..., 32, then multiples of 32 (at most
// max_batch): a handful of captured graphs, at most 31 rows generated in vain.
int64_t padded_rows(int64_t rows, int64_t max_batch) {
  int64_t p = 1;
  while (p < rows && p < 32) p *= 2;
  if (p < rows) p = (rows + 31) / 32 * 32;
  return std::max(rows, std::min(p, max_batch));
}

}  // namespace

void BatchScheduler::serve_batch(std::vector<Chunk> chunks) {
  Batch b;
  b.start = clock_type::now();
  std::vector<sampling::RowGroup> groups;
  for (const auto& c : chunks) {
    sampling::RowGroup grp;
    grp.first = static_cast<int64_t>(b.classes.size());
    grp.n = c.n;
    grp.opts = c.job->request.opts;
    grp.seed = c.seed;
    groups.push_back(grp);
    for (int64_t i = 0; i < c.n; ++i) b.classes.push_back(c.job->request.classes[c.first + i]);
  }
  const int64_t rows = static_cast<int64_t>(b.classes.size());
  b.padded = opts_.pad_rows ? padded_rows(rows, opts_.max_batch) : rows;
  std::vector<int64_t> classes = b.classes;
  if (b.padded > rows) {  // filler rows: greedy, unguided, class 0; their tokens are dropped
    sampling::RowGroup fill;
    fill.first = rows, fill.n = b.padded - rows, fill.opts.top_k = 1;
    groups.push_back(fill);
    classes.resize(static_cast<size_t>(b.padded), 0);
  }
  b.chunks = std::move(chunks);
  try {
    b.speculative = opts_.engine.speculative > 0 && rows <= opts_.speculative_images;
    const auto strategy = b.speculative ? sampling::Strategy::speculative : sampling::Strategy::sequential;
    auto tokens = sampler_.sample_groups(torch::tensor(classes, torch::kInt64), groups, strategy).narrow(0, 0, rows);
    b.sampled = clock_type::now();
    // Each chunk is decoded on its own (in decode_batch pieces), as `rar sample` decodes its batch:
    // a request's pixels do not depend on who shared its generation batch.
    if (decoder_) {
      std::vector<int64_t> pieces;
      for (const auto& c : b.chunks) pieces.push_back(c.n);
      decoder_->submit(tokens, pieces);
    }
    if (overlapped_) {  // decoded beside the next batch; handed out by deliver_loop
      {
        std::lock_guard<std::mutex> lock(out_mu_);
        out_.push_back(std::move(b));
      }
      out_cv_.notify_all();
      return;
    }
    if (decoder_) b.pixels = decoder_->take();
    deliver(b);
  } catch (const std::exception& e) {
    for (const auto& c : b.chunks) c.job->fail_with(std::string("generation failed: ") + e.what());
  }
}

void BatchScheduler::deliver_loop() {
  for (;;) {
    Batch b;
    {
      std::unique_lock<std::mutex> lock(out_mu_);
      out_cv_.wait(lock, [&] { return out_stopping_ || !out_.empty(); });
      if (out_.empty()) return;
      b = std::move(out_.front());
      out_.pop_front();
    }
    try {
      b.pixels = decoder_->take();  // (this thread runs only with a GPU decoder)
      deliver(b);
    } catch (const std::exception& e) {
      for (const auto& c : b.chunks) c.job->fail_with(std::string("decoding failed: ") + e.what());
    }
  }
}

void BatchScheduler::deliver(Batch& b) {
  int64_t row = 0;
  for (const auto& c : b.chunks) {
    std::vector<GeneratedImage> out;
    for (int64_t i = 0; i < c.n; ++i, ++row) {
      GeneratedImage im;
      im.index = c.first + i;
      im.cls = b.classes[static_cast<size_t>(row)];
      im.seed = c.seed;
      if (b.pixels.defined()) im.pixels = b.pixels[row];
      out.push_back(std::move(im));
    }
    c.job->deliver(std::move(out));
  }
  const int64_t rows = static_cast<int64_t>(b.classes.size());
  const auto end = clock_type::now();
  const double seconds = std::chrono::duration<double>(end - b.start).count();
  if (opts_.verbose)
    std::fprintf(stderr, "rar serve: batch of %lld rows (%zu requests, generated as %lld%s): sampled in %.3f s, handed out after %.3f s\n",
                 static_cast<long long>(rows), b.chunks.size(), static_cast<long long>(b.padded),
                 b.speculative ? ", speculative" : "",
                 std::chrono::duration<double>(b.sampled - b.start).count(), seconds);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.batches;
  stats_.images += rows;
  stats_.padded_rows += b.padded - rows;
  stats_.speculative_batches += b.speculative;
  stats_.batch_seconds += seconds;
  size_t bucket = 0;
  for (int64_t n = 1; n < rows; n *= 2) ++bucket;
  if (bucket < stats_.batch_sizes.size()) ++stats_.batch_sizes[bucket];
}

}  // namespace rar::serve
