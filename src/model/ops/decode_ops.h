// decode_ops.h — the ops of one decode step over a KV cache (sampling/static_decode, the engine
// behind `rar sample`): writing this position's key and value into its cache slot and attention of
// one new query per row over the filled slots. Each a plain LibTorch function with a fused CUDA
// path beside it (model/ops/fused.h; kernels/decode_attention.cu).
#pragma once
#include <string>

#include <torch/torch.h>

#include "model/ops/fused.h"

namespace rar::model {

// Which decode-attention kernel the fused path uses: "warp" (bf16 queries, head dims
// 48/64/80/88/128; others fall back to "block"), "block", "split" (the decode step's q/k norm +
// attention kernel with 8 warps per row and head, for batches of few rows; elsewhere "warp") or
// "auto" (the default: "split" up to 48 (row, head) pairs — one guided image — "warp" above). A
// value in the options of whoever decodes (sampling::SamplingOptions::attention_kernel).
enum class AttentionKernel { block, warp, split, automatic };
// "block", "warp", "split" or "auto"; anything else is a one-line error naming the choices.
AttentionKernel parse_attention_kernel(const std::string& name);
const char* attention_kernel_name(AttentionKernel k);

// Keys/values in a KV cache's dtype: the model's, or fp8 e4m3 (`--kv-cache fp8`: half the bytes
// every decode step reads; values saturate at +-448, as the CUDA kernels write them).
torch::Tensor to_cache_dtype(const torch::Tensor& x, at::ScalarType t);
// x [B,heads,1,hd] into slot `slot` ([1] int64) of a KV cache [B,heads,cap,hd] (to_cache_dtype).
void append_to_cache(torch::Tensor& cache, const torch::Tensor& slot, const torch::Tensor& x);

// Attention inputs of one new position per row (qkv [B,1,3H]): q = q_norm(q) -> [B,heads,1,hd], and
// k_norm(k), v written into slot `slot` ([1] int64 on the caches' device) of the KV caches
// [B,heads,cap,hd]. Without gradients on CUDA one kernel writes the cache directly (no separate
// copy; graph-replayable since the slot is read on the device); otherwise qk_norm_split + index_copy_.
torch::Tensor qk_norm_into_cache(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                 const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache, torch::Tensor& v_cache,
                                 const torch::Tensor& slot, OpPath path);

// Attention of one new query per row over a KV cache (the static-shape decode step): q
// [B,heads,1,hd], k/v caches [B,heads,cap,hd], `last` [1] int64 on the device = the last valid
// slot, `valid` [1,1,1,cap] bool = slots <= last. softmax(q·kᵀ/√hd)·v over the valid slots ->
// [B,1,H]. Plain path: scaled_dot_product_attention with the mask (reads the whole cache); CUDA
// kernel (kernels/decode_attention): reads the valid slots only, the count from device memory.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                               const torch::Tensor& last, const torch::Tensor& valid, OpPath path,
                               AttentionKernel kernel = AttentionKernel::automatic);

// A decode step's attention from the qkv projection [B,1,3H]: qk_norm_into_cache (this position's
// key and value into slot `slot`) then decode_attention over slots 0..slot -> [B,1,H]. Without
// gradients on CUDA with the warp kernel (bf16; its head dims): one kernel does both, with the
// same values as the two (bit-identical q, cache and output); otherwise the two ops.
torch::Tensor qk_norm_decode_attention(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                       const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache,
                                       torch::Tensor& v_cache, const torch::Tensor& slot, const torch::Tensor& valid,
                                       OpPath path, AttentionKernel kernel = AttentionKernel::automatic);

}  // namespace rar::model
