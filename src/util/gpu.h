// gpu.h — what the code needs of CUDA beyond tensors, behind one interface: a CUDA build
// implements it in util/cuda/gpu_cuda.cpp, other builds in util/gpu_unavailable.cpp (where
// nothing is available and every use is a one-line error), so no caller needs an #ifdef.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <torch/torch.h>

namespace rar::gpu {

// Whether this build has CUDA (a CUDA device may still be absent).
bool built();

// A generator for `device` (a CUDA device) seeded with `seed`.
at::Generator cuda_generator(const torch::Device& device, uint64_t seed);

// A CUDA device's name and compute capability (major, minor); {"", 0, 0} for other devices.
struct DeviceKind {
  std::string name;
  int major = 0, minor = 0;
};
DeviceKind device_kind(const torch::Device& device);

// Peak memory of the caching allocator on a CUDA device: reset, and read in GiB (0 elsewhere).
void reset_peak_memory(const torch::Device& device);
double peak_memory_gib(const torch::Device& device);

// A step captured once in a CUDA graph and replayed: the constructor runs a warm-up once eagerly on
// a side stream (allocator, cuBLAS handles and workspaces set up outside the capture) — `warm_up`
// when given (the same kernels on buffers of its own, for a step that updates its state in place),
// else `step` itself — then captures `step`; replay() re-runs the captured kernels and returns the tensor `step` returned at
// capture (rewritten in place by every replay). Everything `step` reads must stay at the same
// addresses. Random numbers drawn inside the step through the default CUDA generator are new at
// every replay (LibTorch's graph-safe Philox offsets).
struct StepGraphOptions {
  // The default CUDA generator's state is as before construction (the eager run's draws undone),
  // so the first replay draws what an eager step in its place would have drawn.
  bool rng_unchanged = false;
  // The allocator's cached blocks are released after the eager run, so the graph's own memory
  // pool can take that memory (a training step's activations would otherwise be held twice).
  bool release_cache = false;
};
class StepGraph {
 public:
  explicit StepGraph(const std::function<torch::Tensor()>& step, StepGraphOptions options = {},
                     const std::function<torch::Tensor()>& warm_up = {});
  ~StepGraph();
  torch::Tensor replay();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Work overlapped with the current stream on a side stream of a CUDA device, collected in order.
class SideStream {
 public:
  explicit SideStream(const torch::Device& device);
  ~SideStream();
  // Runs fn(input) on the side stream once the current stream has produced `input` (its memory is
  // kept for the side stream until then); returns fn's result, still being computed.
  torch::Tensor run(const torch::Tensor& input, const std::function<torch::Tensor(const torch::Tensor&)>& fn);
  // Waits for the oldest run not yet collected and returns its result (`result`) on the CPU.
  torch::Tensor collect(const torch::Tensor& result);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rar::gpu
