// distributed.h — data parallelism over LibTorch's c10d: ProcessGroupGloo on CPU tensors,
// ProcessGroupNCCL on CUDA tensors (CUDA builds), configured from the torchrun environment:
//   RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
// (`torchrun --no-python --nproc-per-node N rar train ...`, or set them yourself). Under torchrun
// (TORCHELASTIC_USE_AGENT_STORE=True) the agent's TCPStore is joined as a client; otherwise rank 0
// hosts it. With WORLD_SIZE 1 (or unset) everything here is a no-op.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace rar::training {

struct DistEnv {
  int64_t rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  bool agent_store = false;
  int64_t restart_count = 0;
};
// Reads the variables above; malformed values are one-line errors naming the variable.
DistEnv dist_env_from_environment();

class DataParallel {
 public:
  DataParallel(const DistEnv& env, const torch::Device& device, int64_t bucket_mb = 25);
  ~DataParallel();
  int64_t rank() const { return env_.rank; }
  int64_t world() const { return env_.world; }
  bool is_main() const { return env_.rank == 0; }
  const char* backend() const;

  // Rank 0's values to every rank (start from identical weights).
  void broadcast(const std::vector<torch::Tensor>& tensors);
  // Every gradient becomes the mean over ranks: flattened into buckets of about bucket_mb,
  // all-reduced asynchronously bucket by bucket, then copied back.
  void average_gradients(const std::vector<torch::Tensor>& params);
  // Sums / averages of a few scalars across ranks (for logs).
  std::vector<double> sum(const std::vector<double>& values);
  void barrier();

 private:
  struct Impl;
  DistEnv env_;
  torch::Device device_;
  int64_t bucket_bytes_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rar::training
