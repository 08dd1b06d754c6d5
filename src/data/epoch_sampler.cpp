// epoch_sampler.cpp — see epoch_sampler.h.
#include "data/epoch_sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include "util/error.h"

namespace rar::data {

EpochSampler::EpochSampler(int64_t size, int64_t global_batch, uint64_t seed, int64_t rank, int64_t world_size,
                           bool shuffle)
    : size_(size), global_batch_(global_batch), rank_(rank), world_size_(world_size), seed_(seed), shuffle_(shuffle) {
  check(size > 0, "the training data is empty");
  check(global_batch > 0 && world_size > 0 && global_batch % world_size == 0, "global batch ", global_batch,
        " must be a positive multiple of the world size ", world_size);
  check(rank >= 0 && rank < world_size, "rank ", rank, " outside world size ", world_size);
}

int64_t EpochSampler::index_at(int64_t pos) {
  const int64_t e = pos / size_;
  if (!shuffle_) return pos % size_;
  if (e != cached_epoch_) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed_ + static_cast<uint64_t>(e));
    perm_ = torch::randperm(size_, gen, torch::kInt64);
    cached_epoch_ = e;
  }
  return perm_.data_ptr<int64_t>()[pos % size_];
}

std::vector<int64_t> EpochSampler::next() {
  const int64_t local = local_batch();
  std::vector<int64_t> out(local);
  const int64_t first = position_ + rank_ * local;
  for (int64_t i = 0; i < local; ++i) out[i] = index_at(first + i);
  position_ += global_batch_;
  return out;
}

}  // namespace rar::data
