// decode_attention.h — attention of one new query per row over a KV cache, the number of valid
// slots read from device memory: the static-shape decode step (sampling/static_decode) can
// then be captured once in a CUDA graph and replayed at every step, reading only the filled part
// of the cache (a masked attention over the whole cache reads all of it). CUDA builds only; the
// wrapper and the plain path (masked scaled_dot_product_attention) live in model/ops/decode_ops and model/ops/cuda/decode_ops_cuda.cpp.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/block_kernels.h"

namespace rar::kernels {

// Largest cache the kernel takes (its scores sit in shared memory).
constexpr int64_t kMaxDecodeSlots = 4096;
bool decode_attention_supported(int hd, int64_t cap);

// Two kernels: `block` (one block of 128 threads per (row, head); every dtype and hd % 8 == 0) and
// `warp` (one warp per (row, head), no block barriers; bf16 queries, head dims 48/64/80/88/128).
enum class DecodeAttentionVariant { block, warp };
bool decode_attention_warp_supported(int hd, int64_t cap, bool bf16_queries);

// q [R, heads, hd]; k, v [R, heads, cap, hd]; all contiguous, one dtype (f32 or bf16), or with kv_fp8
// bf16 q and fp8 (e4m3) caches; hd % 8 == 0, hd <= 256. Row r, head h attends over slots 0..*last
// of its cache: out[r,h] = softmax(q·kᵀ·scale)·v, [R, heads, hd]. Float accumulation.
void decode_attention(DType t, const void* q, const void* k, const void* v, const int64_t* last, int64_t R, int heads,
                      int hd, int64_t cap, float scale, void* out, cudaStream_t stream, bool kv_fp8 = false,
                      DecodeAttentionVariant variant = DecodeAttentionVariant::block);

// The decode step's q/k LayerNorms, cache append and attention in one warp kernel: qkv [R, 3·heads·hd]
// bf16 (the qkv projection of one position per row); wq, bq, wk, bk float [hd] (q_norm, k_norm);
// this position's key and value are written to slot *last of the caches (bf16, or fp8 with kv_fp8),
// then out [R, heads·hd] = softmax(q·kᵀ·scale)·v over slots 0..*last. Bit-identical to
// qk_norm_split_forward with cache_slot followed by decode_attention's warp variant; needs
// decode_attention_warp_supported(hd, cap, true).
// `split`: the split variant for batches of few rows — a block of 8 warps per (row, head), warp 0
// doing the norms and the append (the same bits), each warp attending over an eighth of the slots,
// the parts combined in the block (same math, another summation order); needs
// decode_attention_split_supported(hd, cap).
void qk_norm_decode_attention(const void* qkv, int64_t R, int heads, int hd, const float* wq, const float* bq,
                              const float* wk, const float* bk, float eps, void* k, void* v, const int64_t* last,
                              int64_t cap, float scale, void* out, cudaStream_t stream, bool kv_fp8,
                              bool split = false);
bool decode_attention_split_supported(int hd, int64_t cap);

}  // namespace rar::kernels
