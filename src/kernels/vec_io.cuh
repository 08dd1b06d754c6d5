// vec_io.cuh — element conversions and vectorised loads/stores shared by the CUDA kernels:
// float <-> bf16, four or eight consecutive elements as floats (8/16-byte accesses).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>

namespace rar::kernels {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum over the L consecutive lanes of an aligned group (L a power of two <= 32; every lane calls it).
template <int L>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Mean and 1/sqrt(variance + eps) of a row of `width` values held 8 per lane by an aligned group
// of P lanes (val: zeros where not `active`): two passes, each summed over the group. Every lane
// of the warp calls it.
template <int P>
__device__ __forceinline__ void group_row_stats8(const float val[8], bool active, int width, float eps, float& mu,
                                                 float& rs) {
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) s += val[j];
  mu = group_sum<P>(s) / width;
  float sq = 0.f;
  if (active) {
#pragma unroll
    for (int j = 0; j < 8; ++j) sq += (val[j] - mu) * (val[j] - mu);
  }
  rs = rsqrtf(group_sum<P>(sq) / width + eps);
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Four consecutive elements as floats: one 16-byte (float) or 8-byte (bf16) access.
__device__ __forceinline__ void load4(const float* p, float v[4]) {
  const float4 t = *reinterpret_cast<const float4*>(p);
  v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float v[4]) {
  const uint2 t = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&t.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&t.y));
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}
__device__ __forceinline__ void store4(float* p, const float v[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, const float v[4]) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), b = __floats2bfloat162_rn(v[2], v[3]);
  uint2 t;
  t.x = *reinterpret_cast<const unsigned*>(&a);
  t.y = *reinterpret_cast<const unsigned*>(&b);
  *reinterpret_cast<uint2*>(p) = t;
}

// Eight consecutive bf16 elements (16 bytes) as floats; eight floats as two 16-byte accesses.
// unpack8 converts eight elements already loaded as raw bits (uint4: bf16, uint2: fp8 e4m3), so a
// kernel can issue several loads before it converts any.
__device__ __forceinline__ void unpack8(const uint4& t, float v[8]) {
  const unsigned u[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u[i]));
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float v[8]) {
  unpack8(*reinterpret_cast<const uint4*>(p), v);
}
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float v[8]) {
  unsigned u[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    u[i] = *reinterpret_cast<const unsigned*>(&h);
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(u[0], u[1], u[2], u[3]);
}
__device__ __forceinline__ void load8(const float* p, float v[8]) {
  load4(p, v);
  load4(p + 4, v + 4);
}
__device__ __forceinline__ void store8(float* p, const float v[8]) {
  store4(p, v);
  store4(p + 4, v + 4);
}

// Eight consecutive fp8 (e4m3) elements (8 bytes) as floats; eight floats to fp8, rounded to
// nearest, saturating at +-448 (the KV cache in fp8 mode).
__device__ __forceinline__ void unpack8(const uint2& t, float v[8]) {
  const float4 a = static_cast<float4>(*reinterpret_cast<const __nv_fp8x4_e4m3*>(&t.x));
  const float4 b = static_cast<float4>(*reinterpret_cast<const __nv_fp8x4_e4m3*>(&t.y));
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const __nv_fp8_e4m3* p, float v[8]) {
  unpack8(*reinterpret_cast<const uint2*>(p), v);
}
__device__ __forceinline__ void store8(__nv_fp8_e4m3* p, const float v[8]) {
  const __nv_fp8x4_e4m3 a(make_float4(v[0], v[1], v[2], v[3])), b(make_float4(v[4], v[5], v[6], v[7]));
  uint2 t;
  t.x = *reinterpret_cast<const unsigned*>(&a);
  t.y = *reinterpret_cast<const unsigned*>(&b);
  *reinterpret_cast<uint2*>(p) = t;
}

}  // namespace rar::kernels
