// pdl.cuh — programmatic dependent launch (Hopper): a kernel launched with it may begin while the
// kernel before it in the stream is still finishing, so its launch and its first loads of data that
// kernel does not write (weights) overlap that kernel's tail. The kernel must call pdl_wait() before
// it reads anything the previous kernel writes and before it writes anything at all; pdl_trigger()
// lets the next kernel start launching. Launched without the attribute (pdl = false) both are no-ops.
// Used by the small-batch decode step's kernels (skinny_linear.cu, the split attention kernel),
// where a block is five short kernels and the gaps between them are a large share of the step.
#pragma once
#include <cuda_runtime.h>

#include <utility>

namespace rar::kernels {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialisation when `pdl`.
template <typename... Params, typename... Args>
cudaError_t launch_maybe_pdl(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                             cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace rar::kernels
