// distributed.h — data parallelism over LibTorch's c10d: ProcessGroupGloo on CPU tensors,
// ProcessGroupNCCL on CUDA tensors (CUDA builds), configured from the torchrun environment:
//   RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (and, on several nodes,
//   LOCAL_WORLD_SIZE and GROUP_RANK: the processes of this node and the node's index)
// (`torchrun --no-python --nproc-per-node N rar train ...`, or set them yourself). Under torchrun
// (TORCHELASTIC_USE_AGENT_STORE=True) the agent's TCPStore is joined as a client; otherwise rank 0
// hosts it at MASTER_ADDR. With WORLD_SIZE 1 (or unset) everything here is a no-op. Nothing here
// needs a filesystem shared by the processes: what crosses ranks travels through the process group.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace rar::training {

struct DistEnv {
  int64_t rank = 0, world = 1, local_rank = 0;
  int64_t local_world = 1, node = 0;  // LOCAL_WORLD_SIZE, GROUP_RANK (one node unless set)
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  bool agent_store = false;
  int64_t restart_count = 0;
};
// Reads the variables above; malformed values are one-line errors naming the variable.
DistEnv dist_env_from_environment();
// The device this process computes on: with several processes a CUDA device becomes
// cuda:LOCAL_RANK; a CUDA device is also made the thread's current one (the streams that CUDA
// graphs capture on, NCCL's and cuBLAS's, are the current device's).
torch::Device rank_device(torch::Device device, const DistEnv& env);

class DataParallel {
 public:
  // comm_dtype: what the gradients travel as (kBFloat16 halves the traffic; the average is then
  // rounded to bf16 before it is added back in the parameters' precision). exact: the ranks'
  // gradients are summed in rank order — the order one process accumulating the same global batch
  // adds its micro-batches in — so N processes train bit-identically to it at any N (an all-to-all
  // of shards during backward, the rank-order sums and an all-gather after it: a ring all-reduce's
  // traffic, its second half after backward); otherwise one all-reduce per bucket (exact at 2).
  DataParallel(const DistEnv& env, const torch::Device& device, double bucket_mb = 25,
               torch::ScalarType comm_dtype = torch::kFloat32, bool exact = true);
  ~DataParallel();
  int64_t rank() const { return env_.rank; }
  int64_t world() const { return env_.world; }
  bool is_main() const { return env_.rank == 0; }
  const char* backend() const;

  // Rank 0's values to every rank (start from identical weights).
  void broadcast(const std::vector<torch::Tensor>& tensors);
  // Gradient averaging across ranks: attach() once; arm() before the backward whose
  // gradients are final (the last micro-step); during that backward each bucket of gradients
  // (parameters in reverse order, about bucket_mb each) starts its asynchronous all-reduce as soon
  // as all its gradients are accumulated (hooks on the gradient accumulators), overlapping
  // communication with the rest of backward; finish() waits, averages and copies back.
  void attach(const std::vector<torch::Tensor>& params);
  void arm();
  void finish();
  // Of the last finish(): how many buckets there are and how many had started during backward.
  int64_t buckets() const;
  int64_t overlapped() const { return last_overlapped_; }
  // Sums a tensor across ranks, in place on the device (no host synchronisation).
  void sum_(torch::Tensor& t);
  // The elementwise max across ranks, in place (t may be a view).
  void max_(torch::Tensor& t);
  void barrier();
  // Every rank's `t` (the same shape and dtype on every rank), stacked [world, ...], on t's device.
  torch::Tensor all_gather(const torch::Tensor& t);
  // Rank 0's `t` on every rank (each passes a tensor of the same shape and dtype), on t's device.
  torch::Tensor from_main(const torch::Tensor& t);
  std::string from_main(const std::string& s);  // rank 0's string (any length) on every rank
  // Whether `ok` holds on every rank (a collective: every rank learns whether one failed).
  bool all_ok(bool ok);

  struct Impl;  // public so the gradient hooks can reach it; defined in distributed.cpp

 private:
  DistEnv env_;
  torch::Device device_;
  int64_t bucket_bytes_;
  int64_t last_overlapped_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rar::training
