// decode_ops.h — the ops of one decode step over a KV cache (sampling/static_decode, the engine
// behind `rar sample`): writing this position's key and value into its cache slot, attention of one
// new query per row over the filled slots, and the linear layers of a step of few rows (with the
// modulated LayerNorm in front or the gated residual behind). Each a plain LibTorch function with a
// fused CUDA path beside it (model/ops/fused.h; kernels/decode_attention.cu, kernels/skinny_linear.cu).
#pragma once
#include <string>

#include <torch/torch.h>

#include "model/ops/fused.h"

namespace rar::model {

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
                                 const torch::Tensor& slot);

// Attention of one new query per row over a KV cache (the static-shape decode step): q
// [B,heads,1,hd], k/v caches [B,heads,cap,hd], `last` [1] int64 on the device = the last valid
// slot, `valid` [1,1,1,cap] bool = slots <= last. softmax(q·kᵀ/√hd)·v over the valid slots ->
// [B,1,H]. Plain path: scaled_dot_product_attention with the mask (reads the whole cache); CUDA
// kernel (kernels/decode_attention): reads the valid slots only, the count from device memory.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                               const torch::Tensor& last, const torch::Tensor& valid);

// A decode step's attention from the qkv projection [B,1,3H]: qk_norm_into_cache (this position's
// key and value into slot `slot`) then decode_attention over slots 0..slot -> [B,1,H]. Without
// gradients on CUDA with the warp kernel (bf16; its head dims): one kernel does both, with the
// same values as the two (bit-identical q, cache and output); otherwise the two ops.
torch::Tensor qk_norm_decode_attention(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                       const torch::nn::LayerNorm& k_norm, torch::Tensor& k_cache,
                                       torch::Tensor& v_cache, const torch::Tensor& slot, const torch::Tensor& valid);

// A decode step's linear layer, x [B,1,in] -> [B,1,out] (or a speculative window's [B,W,in] ->
// [B,W,out]): at::linear, then the exact GELU with `gelu`. With the skinny path on
// (set_skinny_linear / RAR_SKINNY_LINEAR=1; off by default: slower than cuBLAS on rar_xl), no gradients,
// CUDA, bf16 and B·W <= 8 rows (one to four guided images, or one image's window of 4): one kernel
// that reads each weight row once with every SM busy, GELU in its epilogue (kernels/skinny_linear);
// the same values up to float summation order.
torch::Tensor decode_linear(const torch::nn::LinearImpl& l, const torch::Tensor& x, bool gelu = false);

// A block of the decode step for a batch whose adaLN vectors all come from a table
// (sampling/static_decode's small-batch step) in five ops: decode_ln_linear (qkv), the q/k norm +
// attention, decode_linear_residual (proj), decode_ln_linear (fc1 + GELU), decode_linear_residual
// (fc2). `table` [T, n] holds the adaLN vectors of each condition and position; row r of the batch
// uses table row index[r] ([R] int64 on the device). With the skinny path on, no gradients, CUDA,
// bf16 and at most 8 rows, each op is one kernel (kernels/skinny_linear): the LayerNorm in front of
// the product, the gated residual behind it, no gathered copy of the table rows.
// z = ln_modulate(ln, x, shift, scale) with shift, scale = columns [shift_col, +H), [scale_col, +H) of
// the rows' table rows; then decode_linear(lin, z, gelu). x [R,1,H] -> [R,1,out].
torch::Tensor decode_ln_linear(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& table,
                               const torch::Tensor& index, int64_t shift_col, int64_t scale_col,
                               const torch::nn::LinearImpl& lin, bool gelu = false);
// x + gate·lin(h), gate = columns [gate_col, +H) of the rows' table rows; x [R,1,H], h [R,1,in]. The
// fused path adds into x in place; use the returned tensor either way.
torch::Tensor decode_linear_residual(torch::Tensor& x, const torch::Tensor& h, const torch::nn::LinearImpl& lin,
                                     const torch::Tensor& table, const torch::Tensor& index, int64_t gate_col);
void set_skinny_linear(bool on);
bool skinny_linear_enabled();
// Programmatic dependent launch for the small-batch step's kernels (the skinny ones and the split
// attention): each may start while the previous one finishes, streaming its first weights meanwhile
// (kernels/pdl.cuh). Opt-in (set_pdl / RAR_PDL=1) until measured; the same values either way.
void set_pdl(bool on);
bool pdl_enabled();

// Which decode-attention kernel the fused path uses: "warp" (bf16 queries, head dims
// 48/64/80/88/128; others fall back to "block"), "block", "split" (the decode step's q/k norm +
// attention kernel with 8 warps per row and head, for batches of few rows; elsewhere "warp") or
// "auto" (the default: "split" up to 48 (row, head) pairs — one guided image — "warp" above).
// The environment variable RAR_DECODE_ATTENTION sets the starting value; tests and benchmarks
// switch it here.
void set_decode_attention_kernel(const std::string& name);
std::string decode_attention_kernel();

}  // namespace rar::model
