// sample_job.cpp — see sample_job.h.
#include "sampling/sample_job.h"

#include "sampling/decode_pipeline.h"
#include "util/error.h"

namespace rar::sampling {

int64_t images_of_rank(int64_t total, int64_t batch, int64_t rank, int64_t world) {
  int64_t n = 0;
  for (int64_t first = rank * batch; first < total; first += world * batch) n += std::min(batch, total - first);
  return n;
}

SampleSummary run_sampling(model::Generator g, std::optional<model::VQModel> vq, const SampleRun& run,
                           const std::function<void(const SampledBatch&)>& on_batch) {
  check(run.batch > 0 && run.world > 0 && run.rank >= 0 && run.rank < run.world, "sampling: bad batch or rank");
  Sampler sampler(g, run.opts);
  const int64_t N = run.classes.size(0);
  std::optional<DecodePipeline> decoder;
  if (vq) decoder.emplace(*vq, run.decode_batch);
  SampleSummary summary;
  // A generated batch waits here while its images are decoded (on a CUDA device: on a side
  // stream, overlapped with generating the next batch); it is handed on once they are back.
  SampledBatch waiting;
  bool is_waiting = false;
  auto hand_on = [&](SampledBatch& x) {
    if (run.shards && x.generated) run.shards->write(x.index, x.images, x.classes, x.tokens);
    summary.images += x.n;
    on_batch(x);
  };
  auto flush = [&] {
    if (!is_waiting) return;
    if (decoder) waiting.images = decoder->take();
    hand_on(waiting);
    is_waiting = false;
  };
  for (int64_t b = 0, first = 0; first < N; ++b, first += run.batch) {
    if (b % run.world != run.rank) continue;
    SampledBatch x;
    x.index = b, x.first = first, x.n = std::min(run.batch, N - first);
    x.classes = run.classes.narrow(0, first, x.n);
    if (run.shards && run.shards->done(b)) {
      flush();
      x.tokens = run.shards->tokens(b);
      x.generated = false;
      hand_on(x);
      continue;
    }
    if (run.max_batches > 0 && summary.generated == run.max_batches) {
      summary.stopped = true;
      break;
    }
    ++summary.generated;
    auto tokens = sampler.sample_batch(x.classes, Sampler::batch_seed(run.opts.seed, b));
    flush();  // the previous batch's images were decoded while this batch was generated
    if (decoder) decoder->submit(tokens);
    x.tokens = tokens.cpu();
    waiting = std::move(x);
    is_waiting = true;
  }
  flush();
  summary.speculative = sampler.speculative_stats();
  return summary;
}

}  // namespace rar::sampling
