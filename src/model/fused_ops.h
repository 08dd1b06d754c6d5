// fused_ops.h — the block's memory-bound steps as single operations, each with two paths:
//   plain: LibTorch ops exactly as the SPEC reads (the reference; every device, every dtype);
//   fused: one CUDA kernel forward and one backward (kernels/block_kernels.cu), used on CUDA
//          tensors in a RAR_CUDA build when `fused_kernels_enabled()`; tested against plain.
// Both paths give the same values up to float rounding (the fused path rounds once to bf16
// where the plain path rounds after every op).
#pragma once
#include <array>

#include <torch/torch.h>

namespace rar::model {

// Global switch for the fused path (default on; off with RAR_FUSED=0 or `rar bench train --plain`).
bool fused_kernels_enabled();
void set_fused_kernels(bool on);
// Whether this build has the CUDA kernels at all.
bool fused_kernels_built();

// The dtype the matmuls run in: autocast's when it is on (bf16 training), else the tensor's own.
torch::Tensor to_compute(const torch::Tensor& t);

// A value used by every block in the matmul dtype, cast once: returns `cast` (= src in the matmul
// dtype, computed by the caller without gradients) as a use of `src`, whose gradient comes back in
// src's dtype. Each block takes one such use, so the blocks' gradients add up in float32 like the
// reference's per-block casts, while the forward reads one shared bf16 copy (no per-block cast,
// nothing extra kept per block).
torch::Tensor shared_cast(const torch::Tensor& src, const torch::Tensor& cast);

// SPEC §3.6 modulated LayerNorm: LN(x) * (1 + scale) + shift, with `ln`'s affine (if any) and eps.
// x [B,N,H] (float32 residual stream, or bf16 with bf16 weights); shift/scale [B,N,H] (chunks of
// the adaLN projection). Result in the matmul dtype (autocast's, else shift's).
torch::Tensor ln_modulate(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& shift,
                          const torch::Tensor& scale);

// SPEC §3.6 gated residual: x + gate * y.
torch::Tensor gated_residual(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y);

// SPEC §3.6, the end of a block's attention half and the start of its MLP half: x' = x + gate·y,
// z = ln_modulate(ln, x', shift, scale) -> {x', z}. With `inference` and grad mode off, on CUDA one
// kernel pass (the residual stream is read once); otherwise the two ops above (training always
// takes those, so a checkpointed block's no-grad forward and its recomputation run the same kernels).
std::array<torch::Tensor, 2> gated_residual_ln_modulate(const torch::Tensor& x, const torch::Tensor& gate,
                                                        const torch::Tensor& y, const torch::nn::LayerNorm& ln,
                                                        const torch::Tensor& shift, const torch::Tensor& scale,
                                                        bool inference);

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

// Attention inputs: the qkv projection's output [B,N,3H] -> q = q_norm(q), k = k_norm(k), v, each
// [B,heads,N,hd]. q/k norms run in the input's dtype (float32 statistics).
std::array<torch::Tensor, 3> qk_norm_split(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                           const torch::nn::LayerNorm& k_norm);

// SPEC §3.6 adaLN modulation of a block: split6(W·SiLU(c) + b) = (shift_a, scale_a, gate_a, shift_m,
// scale_m, gate_m), each [B,N,H]. In training it is two matmuls, the shifts' rows and the others',
// so the shifts (no backward needs them) get their own storage and are freed after the forward:
// the block keeps 8 of the 12 bytes per token and hidden unit the single [B,N,6H] product would
// (chunks are views: one saved chunk keeps the whole product alive). Same values either way up to
// float rounding; decided by `training`, not by grad mode, so a checkpointed block's recomputation
// runs the very matmuls of its first forward.
std::array<torch::Tensor, 6> adaln_split6(const torch::nn::LinearImpl& lin, const torch::Tensor& silu_c,
                                          bool training);

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
// Which decode-attention kernel the fused path uses: "warp" (default; bf16 queries, head dims
// 48/64/80/88/128; others fall back to "block") or "block". The environment variable
// RAR_DECODE_ATTENTION sets the starting value; tests and benchmarks switch it here.
void set_decode_attention_kernel(const std::string& name);
std::string decode_attention_kernel();

// The VQ model's GroupNorm followed by SiLU (silu = false: the GroupNorm alone). Without gradients
// on CUDA, for a channels-last input (the decoder's `use_channels_last` mode): kernels/group_norm,
// two passes over the activations, output channels-last too (LibTorch's GroupNorm copies such
// input to NCHW and its output back). Otherwise LibTorch's group_norm (+ silu).
torch::Tensor group_norm_silu(const torch::nn::GroupNorm& gn, const torch::Tensor& x, bool silu = true);

// The VQ decoder's nearest-neighbour 2x upsampling of [N,C,H,W] (NCHW or channels-last; the output
// in the same layout). Without gradients on CUDA: kernels/upsample (16-byte copies); otherwise,
// and for shapes it does not take, LibTorch's interpolate. Exact either way (a copy).
torch::Tensor upsample_nearest2x(const torch::Tensor& x);

// SPEC §3.6 MLP tail: fc2(dropout(GELU(u))) for u = fc1(x) [B,N,hidden]. In training the dropout
// mask is drawn here (one bool per element) and, when gradients are needed, one autograd op keeps
// only u and the mask — GELU and dropout are recomputed in backward instead of keeping their two
// outputs (8 of the ~64 bytes a block keeps per token and hidden unit). Every device; the output
// is in u's dtype (the matmul dtype under autocast).
torch::Tensor gelu_dropout_linear(const torch::Tensor& u, const torch::nn::LinearImpl& fc2, double p, bool training);

// The same op with a given mask (undefined = no dropout): the plain composition and the op with
// explicit backward. For tests.
torch::Tensor gelu_dropout_linear_plain(const torch::Tensor& u, const torch::Tensor& mask, double p,
                                        const torch::Tensor& w, const torch::Tensor& b);
torch::Tensor gelu_dropout_linear_saving(const torch::Tensor& u, const torch::Tensor& mask, double p,
                                         const torch::Tensor& w, const torch::Tensor& b);

}  // namespace rar::model
