// gpu_cuda.cpp — util/gpu.h in a CUDA build.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>

#include <deque>
#include <mutex>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "util/error.h"
#include "util/gpu.h"

namespace rar::gpu {

namespace {
c10::DeviceIndex index_of(const torch::Device& d) { return d.has_index() ? d.index() : 0; }
}  // namespace

bool built() { return true; }

at::Generator cuda_generator(const torch::Device& device, uint64_t seed) {
  auto gen = at::cuda::detail::createCUDAGenerator(index_of(device));
  gen.set_current_seed(seed);
  return gen;
}

DeviceKind device_kind(const torch::Device& d) {
  if (!d.is_cuda()) return {};
  const auto* p = at::cuda::getDeviceProperties(index_of(d));
  return {p->name, p->major, p->minor};
}

void reset_peak_memory(const torch::Device& d) {
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(index_of(d));
}

double peak_memory_gib(const torch::Device& d) {
  if (!d.is_cuda()) return 0.0;
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(d));
  return stats.allocated_bytes[0].peak / double(1 << 30);
}

struct StepGraph::Impl {
  at::cuda::CUDAGraph graph;
  torch::Tensor out;
};

StepGraph::StepGraph(const std::function<torch::Tensor()>& step, StepGraphOptions options,
                     const std::function<torch::Tensor()>& warm_up)
    : impl_(std::make_unique<Impl>()) {
  // The eager run computes the step, and the first replay computes it again, identically.
  torch::cuda::synchronize();
  auto side = c10::cuda::getStreamFromPool();
  {
    c10::cuda::CUDAStreamGuard guard(side);
    at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator(side.device_index());
    torch::Tensor rng;
    if (options.rng_unchanged) rng = gen.get_state();
    if (warm_up) warm_up();
    else step();
    if (options.release_cache) {
      torch::cuda::synchronize();
      c10::cuda::CUDACachingAllocator::emptyCache();
    }
    if (options.rng_unchanged) gen.set_state(rng);
    impl_->graph.capture_begin();
    try {
      impl_->out = step();
    } catch (...) {
      // an op that cannot be captured (e.g. a host sync) threw: end the capture before the error
      // leaves, or the stream would stay in capture mode and every later call on it fail
      try {
        impl_->graph.capture_end();
      } catch (...) {
      }
      throw;
    }
    impl_->graph.capture_end();
  }
  torch::cuda::synchronize();
}
StepGraph::~StepGraph() = default;

torch::Tensor StepGraph::replay() {
  impl_->graph.replay();
  return impl_->out;
}

struct SideStream::Impl {
  explicit Impl(c10::cuda::CUDAStream s) : stream(s) {}
  c10::cuda::CUDAStream stream;
  std::mutex mu;  // run() and collect() may be called from different threads
  std::deque<at::cuda::CUDAEvent> done;  // one per run not yet collected, oldest first
};

SideStream::SideStream(const torch::Device& device)
    : impl_(std::make_unique<Impl>(c10::cuda::getStreamFromPool(false, index_of(device)))) {
  check(device.is_cuda(), "side stream: ", device.str(), " is not a CUDA device");
}
SideStream::~SideStream() = default;

torch::Tensor SideStream::run(const torch::Tensor& input, const std::function<torch::Tensor(const torch::Tensor&)>& fn) {
  // The side stream starts once the current stream has produced the input; the input's memory
  // must not be reused by the current stream before the side stream has read it.
  at::cuda::CUDAEvent ready;
  ready.record(c10::cuda::getCurrentCUDAStream(input.device().index()));
  c10::cuda::CUDAStreamGuard guard(impl_->stream);
  ready.block(impl_->stream);
  input.record_stream(impl_->stream);
  auto out = fn(input);
  at::cuda::CUDAEvent done;
  done.record(impl_->stream);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->done.push_back(std::move(done));
  return out;
}

torch::Tensor SideStream::collect(const torch::Tensor& result) {
  at::cuda::CUDAEvent done;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    check(!impl_->done.empty(), "side stream: collect() without a run");
    done = std::move(impl_->done.front());
    impl_->done.pop_front();
  }
  done.synchronize();
  c10::cuda::CUDAStreamGuard guard(impl_->stream);  // the result belongs to the side stream
  return result.cpu();
}

}  // namespace rar::gpu
