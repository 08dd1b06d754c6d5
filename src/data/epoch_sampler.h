// epoch_sampler.h — which examples each step reads. Epoch e visits the examples in the order of
// randperm(N) drawn from a generator seeded with seed + e; steps take consecutive global batches
// from that stream (a batch may straddle two epochs). The whole state is one number, the count
// of examples consumed, so resuming from a checkpoint reproduces the exact same batches.
// With world_size > 1 each rank takes its contiguous slice of every global batch.
#pragma once
#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace rar::data {

class EpochSampler {
 public:
  EpochSampler(int64_t size, int64_t global_batch, uint64_t seed, int64_t rank = 0, int64_t world_size = 1,
               bool shuffle = true);
  // This rank's indices of the next global batch; advances the position.
  std::vector<int64_t> next();
  int64_t position() const { return position_; }  // examples consumed (all ranks together)
  void set_position(int64_t p) { position_ = p; }
  int64_t epoch() const { return position_ / size_; }
  int64_t local_batch() const { return global_batch_ / world_size_; }

 private:
  int64_t index_at(int64_t pos);  // the example at stream position `pos`
  int64_t size_, global_batch_, rank_, world_size_;
  uint64_t seed_;
  bool shuffle_;
  int64_t position_ = 0, cached_epoch_ = -1;
  torch::Tensor perm_;
};

}  // namespace rar::data
