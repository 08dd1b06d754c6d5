// sample_shards.h — a long sampling run written as it goes, so nothing finished is lost and an
// interrupted run resumes where it stopped. Each batch lands atomically in
// "<out>.parts/shard-NNNNNN.npz" (images, labels, tokens); a manifest records the run's settings so
// a resume with different settings is refused. finalize() streams the shards into the ADM-layout
// .npz (`arr_0` uint8 [N,H,W,C], `arr_1` int64 labels) and removes the parts folder.
#pragma once
#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "util/output_lock.h"

namespace rar::io {

class SampleShards {
 public:
  // `settings` identifies the run (model, seed, guidance, batch, ...). `own`: this process holds
  // the output's lock while the object lives (one process of a sharded run; the others false).
  SampleShards(std::string out_path, int64_t total, int64_t shard_size, const nlohmann::json& settings,
               bool own = true);

  int64_t num_shards() const { return (total_ + shard_size_ - 1) / shard_size_; }
  bool done(int64_t shard) const;  // the shard file exists and holds the expected count
  // images uint8 [n,H,W,C], labels int64 [n], tokens int64 [n,S] (undefined when not decoded/kept)
  void write(int64_t shard, const torch::Tensor& images, const torch::Tensor& labels, const torch::Tensor& tokens);
  torch::Tensor tokens(int64_t shard) const;
  // Assembles the final .npz (deflated when `compress`) and removes the parts folder.
  void finalize(bool compress = false);
  const std::string& parts_dir() const { return dir_; }

 private:
  std::string shard_path(int64_t shard) const;
  int64_t shard_count(int64_t shard) const;
  std::string out_, dir_;
  int64_t total_, shard_size_;
  OutputLock lock_;
};

}  // namespace rar::io
