// scheduler.h — the service's batching (rar serve): requests are queued and coalesced into GPU
// batches of at most max_batch rows, waiting at most max_wait_ms for a batch to fill. Every
// request's rows are one group of the batch, with its own guidance, logits chain and seed
// (sampling::Sampler::sample_groups), so a request gives the images `rar sample` gives for the
// same classes, settings and seed (--batch = the request's size).
//
// Policy: a request larger than max_batch is cut into chunks of max_batch rows (chunk j uses
// seed + j, as `rar sample --batch max_batch` does); chunks are served in arrival order, a
// batch taking whole chunks while they fit. A long request's later chunks queue behind requests
// that arrived meanwhile, so it cannot hold the GPU; the per-request image limit keeps one chunk
// well below a batch. Images are handed back as soon as their batch is decoded; a request
// cancelled while queued (its client went away) takes no rows.
//
// On a GPU the batch is padded to a few row counts (1, 2, 4, ..., 32, then multiples of 32), so
// the engine captures one CUDA graph per count and replays it afterwards, and a batch's VQ
// decoding runs on a side stream while the next batch generates (a second thread hands the
// images out). PNG encoding is left to the connections' threads.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/generator.h"
#include "model/vqgan.h"
#include "sampling/decode_pipeline.h"
#include "sampling/sampler.h"
#include "serve/request.h"

namespace rar::serve {

using clock_type = std::chrono::steady_clock;

struct GeneratedImage {
  int64_t index = 0;  // within the request
  int64_t cls = 0;
  uint64_t seed = 0;  // the seed of the chunk the image came from
  torch::Tensor pixels;  // uint8 [H,W,3] on the CPU (undefined without a tokenizer)
};

// One request in flight: the scheduler fills it, the connection waits on it.
class Job {
 public:
  explicit Job(GenerateRequest r) : request(std::move(r)), start(std::chrono::steady_clock::now()) {}
  const GenerateRequest request;
  const std::chrono::steady_clock::time_point start;
  // Blocks until images beyond `have` are done (or the job ends); returns all images so far.
  std::vector<GeneratedImage> wait_for_more(size_t have);
  // The images beyond `have` so far, without waiting.
  std::vector<GeneratedImage> images_after(size_t have);
  std::string error();
  void cancel();
  bool cancelled();
  // Called (on the scheduler's threads: it must return at once) whenever images arrive or the job
  // fails; once at once if something happened before it was set.
  void set_listener(std::function<void()> f);
  // (scheduler side)
  void deliver(std::vector<GeneratedImage> images);
  void fail_with(const std::string& message);

 private:
  void notify();
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<GeneratedImage> images_;
  std::string error_;
  bool cancelled_ = false;
  std::function<void()> listener_;
};

struct SchedulerOptions {
  int64_t max_batch = 256;
  int64_t max_wait_ms = 20;
  int64_t queue = 1024;        // most images waiting
  int64_t decode_batch = 64;
  bool pad_rows = true;   // pad batches to a few row counts when the engine captures graphs
  bool verbose = false;   // one line per batch on stderr (rows, padding, times)
  sampling::SamplingOptions engine;  // engine, kv_cache (the batch's); per-request settings come with requests
  // engine.speculative = W > 0: batches of at most this many images are generated with speculative
  // decoding (W positions per model call: lower latency when few images share a batch); larger
  // ones one token per step (more images per second)
  int64_t speculative_images = 4;
};

struct SchedulerStats {
  int64_t requests = 0, images = 0, batches = 0, queued_images = 0, rejected = 0, cancelled_rows = 0;
  int64_t padded_rows = 0;      // rows generated only to fill a captured row count
  int64_t speculative_batches = 0;  // batches generated with speculative decoding
  double batch_seconds = 0;     // summed over batches: from a batch's start to its images handed out
  std::vector<int64_t> batch_sizes;  // histogram buckets: rows <= 1, 2, 4, ..., max
};

class BatchScheduler {
 public:
  BatchScheduler(model::Generator g, std::optional<model::VQModel> vq, SchedulerOptions opts);
  ~BatchScheduler();
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // Queues a request; nothing (and the request counted as rejected) when the queue is full or
  // the scheduler is stopping.
  std::shared_ptr<Job> submit(GenerateRequest r);
  // Takes no more requests and fails every queued one with `message` (a batch already being
  // generated finishes and is delivered).
  void stop_accepting(const std::string& message);
  SchedulerStats stats();
  const SchedulerOptions& options() const { return opts_; }

 private:
  struct Chunk {
    std::shared_ptr<Job> job;
    int64_t first = 0, n = 0;  // images [first, first + n) of the request
    uint64_t seed = 0;
    std::chrono::steady_clock::time_point queued;
  };
  // A generated batch on its way out: its chunks and classes (its images in the decode pipeline,
  // submitted in batch order).
  struct Batch {
    std::vector<Chunk> chunks;
    std::vector<int64_t> classes;
    int64_t padded = 0;
    bool speculative = false;
    torch::Tensor pixels;  // [rows,H,W,3] uint8 once taken from the pipeline (with a tokenizer)
    clock_type::time_point start, sampled;
  };
  void run();
  void serve_batch(std::vector<Chunk> chunks);
  void deliver(Batch& b);
  void deliver_loop();

  model::Generator g_;
  std::optional<model::VQModel> vq_;
  SchedulerOptions opts_;
  // one sampler: one token per step, or (engine.speculative > 0) speculative decoding for small batches
  sampling::Sampler sampler_;
  // tokens -> images, each request's rows on their own (on a GPU beside the next batch's generation)
  std::unique_ptr<sampling::DecodePipeline> decoder_;
  bool overlapped_ = false;  // a GPU decoder: deliver_loop takes its images on a second thread
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk> queue_;
  int64_t queued_images_ = 0;
  bool stopping_ = false, accepting_stopped_ = false;
  SchedulerStats stats_;
  std::thread worker_;
  std::mutex out_mu_;  // the batches still decoding, oldest first
  std::condition_variable out_cv_;
  std::deque<Batch> out_;
  bool out_stopping_ = false;
  std::thread deliverer_;
};

}  // namespace rar::serve
