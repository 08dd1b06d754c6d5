// dropout_bits.cu — dropout masks drawn on the device as bits (declared in block_kernels.h). One
// byte (eight elements) per loop step of a thread, from two Philox draws of four uniforms; the
// grid is fixed by n alone, so a mask depends on (seed, offset, n) and not on the GPU.
#include <curand_kernel.h>

#include "kernels/block_common.cuh"

namespace rar::kernels {
namespace {

constexpr int64_t kBitsBlocks = 1056;  // at most; fixed (not the SM count) so masks match across GPUs

int64_t bits_blocks(int64_t nbytes) { return std::max<int64_t>(1, std::min<int64_t>((nbytes + kThreads - 1) / kThreads, kBitsBlocks)); }

__global__ void dropout_bits_kernel(PhiloxArgs rng, float keep, int64_t n, int64_t nbytes, uint8_t* __restrict__ bits) {
  // at::cuda::philox::unpack's rule: inside a graph the seed and offset are read at replay
  const uint64_t seed = rng.captured ? static_cast<uint64_t>(*rng.seed_ptr) : rng.seed;
  const uint64_t offset = rng.captured ? static_cast<uint64_t>(*rng.offset_ptr) + rng.offset_intragraph : rng.offset;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  curandStatePhilox4_32_10_t st;
  curand_init(seed, idx, offset, &st);
  for (int64_t i = idx; i < nbytes; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 a = curand_uniform4(&st), b = curand_uniform4(&st);
    unsigned m = static_cast<unsigned>(a.x < keep) | static_cast<unsigned>(a.y < keep) << 1 |
                 static_cast<unsigned>(a.z < keep) << 2 | static_cast<unsigned>(a.w < keep) << 3 |
                 static_cast<unsigned>(b.x < keep) << 4 | static_cast<unsigned>(b.y < keep) << 5 |
                 static_cast<unsigned>(b.z < keep) << 6 | static_cast<unsigned>(b.w < keep) << 7;
    const int64_t left = n - 8 * i;  // the last byte of a length that is not a multiple of 8
    if (left < 8) m &= (1u << left) - 1u;
    bits[i] = static_cast<uint8_t>(m);
  }
}

}  // namespace

uint64_t dropout_bits_increment(int64_t n) {
  const int64_t nbytes = (n + 7) / 8, threads = bits_blocks(nbytes) * kThreads;
  return static_cast<uint64_t>((nbytes + threads - 1) / threads) * 8;  // 32-bit draws per thread
}

void dropout_bits(PhiloxArgs rng, float keep, int64_t n, uint8_t* bits, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t nbytes = (n + 7) / 8;
  dropout_bits_kernel<<<bits_blocks(nbytes), kThreads, 0, stream>>>(rng, keep, n, nbytes, bits);
  check_launch("dropout_bits");
}

}  // namespace rar::kernels
