// gpu_unavailable.cpp — util/gpu.h in a build without CUDA: nothing is available, and every use
// that needs CUDA is a one-line error. (CUDA builds compile util/cuda/gpu_cuda.cpp instead.)
#include "util/error.h"
#include "util/gpu.h"

namespace rar::gpu {

bool built() { return false; }

at::Generator cuda_generator(const torch::Device& device, uint64_t) {
  fail("sampling on ", device.str(), " needs the CUDA build (-DRAR_CUDA=ON)");
}

DeviceKind device_kind(const torch::Device&) { return {}; }

void reset_peak_memory(const torch::Device&) {}
double peak_memory_gib(const torch::Device&) { return 0.0; }

struct StepGraph::Impl {};
StepGraph::StepGraph(const std::function<torch::Tensor()>&, StepGraphOptions, const std::function<torch::Tensor()>&) { fail("engine: CUDA graphs need a CUDA build"); }
StepGraph::~StepGraph() = default;
torch::Tensor StepGraph::replay() { fail("engine: CUDA graphs need a CUDA build"); }

struct SideStream::Impl {};
SideStream::SideStream(const torch::Device& device) { fail("side stream on ", device.str(), " needs the CUDA build"); }
SideStream::~SideStream() = default;
torch::Tensor SideStream::run(const torch::Tensor&, const std::function<torch::Tensor(const torch::Tensor&)>&) {
  fail("side stream: no CUDA in this build");
}
torch::Tensor SideStream::collect(const torch::Tensor&) { fail("side stream: no CUDA in this build"); }

}  // namespace rar::gpu
