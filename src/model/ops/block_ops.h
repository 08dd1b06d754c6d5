// block_ops.h — the generator block's memory-bound steps as single operations (model/generator),
// each a plain LibTorch function with a fused CUDA path beside it (model/ops/fused.h):
//   ln_modulate, ln_modulate_branch, gated_residual,
//   gated_residual_ln_modulate                                adaLN modulation and the residual adds
//   qk_norm_split                                             q/k LayerNorm per head
//   adaln_split6                                              the block's six modulation vectors
//   gelu_dropout_linear, mlp_recomputing                      the MLP's tail, the whole MLP
//   dropout_bits                                              dropout masks, as bits
// With `fp8` on (an Fp8Mode: training.fp8; model/ops/fp8.h) linear, the MLP ops and adaln_split6
// run their products in fp8 where the shapes allow (multiples of 16), on either path; its scaling
// says where their operands' scales come from (none: current scaling; an op's rows: fp8.h's kFp8...).
#pragma once
#include <array>

#include <torch/torch.h>

#include "model/ops/fp8.h"
#include "model/ops/fused.h"

namespace rar::model {

// Every op takes the path to run (OpPath, model/ops/fused.h): the module calling it says which.

// y = x·Wᵀ + b (every product of the generator but the adaLN ones), through ATen's linear:
// torch::nn::Linear's C++ forward adds the bias as a separate broadcast op for 3-D inputs — under
// autocast a float32 bias added into the bf16 product, an unvectorised kernel as costly as the
// product itself (bench/RESULTS.md, "Training steps"); at::linear casts the bias with the weight
// and fuses it into the matmul. Fused path, in a bf16-autocast step with gradients on (CUDA): the
// same forward, and the weight and bias gradients written in float32 directly (no bf16 gradient,
// cast and transposed copy per parameter; the plain path's weight gradient is rounded to bf16
// first). With `fp8` the product runs in fp8 where its shape allows (fp8_linear).
torch::Tensor linear(const torch::nn::LinearImpl& l, const torch::Tensor& x, OpPath path, const Fp8Mode& fp8 = {});

// The parameter gradients of a product y = a·Wᵀ + b from its output gradient g [rows, N], for ops
// that own their backward. weight_gradient: gᵀ·a in w_dtype (fused path: bf16 g and a on CUDA write
// a float32 weight's gradient straight from the product, no bf16 result and cast). bias_gradient:
// g's column sums in float32 (fused path: bf16 g on CUDA through the column-sum kernel,
// deterministic, fixed order).
torch::Tensor weight_gradient(const torch::Tensor& g, const torch::Tensor& a, at::ScalarType w_dtype, OpPath path);
torch::Tensor bias_gradient(const torch::Tensor& g, OpPath path);

// DESIGN §3.6 modulated LayerNorm: LN(x) * (1 + scale) + shift, with `ln`'s affine (if any) and eps.
// x [B,N,H] (float32 residual stream, or bf16 with bf16 weights); shift/scale [B,N,H] (chunks of
// the adaLN projection). Result in the matmul dtype (autocast's, else shift's).
torch::Tensor ln_modulate(const torch::nn::LayerNorm& ln, const torch::Tensor& x, const torch::Tensor& shift,
                          const torch::Tensor& scale, OpPath path);

// {x, ln_modulate(ln, x, shift, scale)}: the residual stream x with the modulated LayerNorm of it,
// for a block half that adds its branch back onto x (`gated_residual(h, gate, branch(n))`). The
// same values as the two taken apart; on the fused path with gradients flowing to x, one autograd
// op whose backward adds the gradient of x's residual use inside the norm's backward kernel
// (otherwise autograd adds the two gradients in a pass of its own), bit for bit the same sum.
std::array<torch::Tensor, 2> ln_modulate_branch(const torch::nn::LayerNorm& ln, const torch::Tensor& x,
                                                const torch::Tensor& shift, const torch::Tensor& scale, OpPath path);

// Dropout masks as bits: element j of byte i in bit j, set = kept; ceil(n/8) uint8 for n elements.
// dropout_bits draws one for n elements, each kept with probability 1 - p (p = 0: undefined, no
// mask). On CUDA one kernel draws it from the default CUDA generator's Philox stream (graph-safe:
// a captured step draws new masks at every replay); elsewhere bernoulli draws, packed. Either way
// the draw follows the default generator's state, so a recomputed block that restores that state
// draws the mask again.
torch::Tensor dropout_bits(int64_t n, double p, const torch::Device& device, OpPath path);
torch::Tensor pack_bits(const torch::Tensor& mask);                           // bool -> bits
torch::Tensor unpack_bits(const torch::Tensor& bits, at::IntArrayRef sizes);  // bits -> bool of `sizes`

// DESIGN §3.6 gated residual: x + gate · dropout(y). With `p` > 0 (training) the branch's dropout
// (the published attention's proj_drop, the MLP's last drop) is drawn here and applied in the same
// pass as the residual add.
torch::Tensor gated_residual(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y, double p, OpPath path);
// The same with a given mask (bits; undefined = no dropout). For tests.
torch::Tensor gated_residual_masked(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& y,
                                    const torch::Tensor& bits, double p, OpPath path);

// DESIGN §3.6, the end of a block's attention half and the start of its MLP half: x' = x + gate·y,
// z = ln_modulate(ln, x', shift, scale) -> {x', z}. With `inference` and grad mode off, on CUDA one
// kernel pass (the residual stream is read once); otherwise the two ops above (training always
// takes those, so a recomputed block's no-grad forward and its recomputation run the same kernels).
std::array<torch::Tensor, 2> gated_residual_ln_modulate(const torch::Tensor& x, const torch::Tensor& gate,
                                                        const torch::Tensor& y, const torch::nn::LayerNorm& ln,
                                                        const torch::Tensor& shift, const torch::Tensor& scale,
                                                        bool inference, OpPath path);

// Attention inputs: the qkv projection's output [B,N,3H] -> q = q_norm(q), k = k_norm(k), v, each
// [B,heads,N,hd]. q/k norms run in the input's dtype (float32 statistics).
std::array<torch::Tensor, 3> qk_norm_split(const torch::Tensor& qkv, int64_t heads, const torch::nn::LayerNorm& q_norm,
                                           const torch::nn::LayerNorm& k_norm, OpPath path);

// DESIGN §3.6 adaLN modulation of a block: split6(W·SiLU(c) + b) = (shift_a, scale_a, gate_a, shift_m,
// scale_m, gate_m), each [B,N,H]. In training it is two matmuls, the shifts' rows and the others',
// so the shifts (no backward needs them) get their own storage and are freed after the forward:
// the block keeps 8 of the 12 bytes per token and hidden unit the single [B,N,6H] product would
// (chunks are views: one saved chunk keeps the whole product alive). Same values either way up to
// float rounding; decided by `training`, not by grad mode, so a recomputed block's recomputation
// runs the very matmuls of its first forward. Fused path (a bf16-autocast step with gradients on,
// CUDA): the same products, the parameter gradients written in float32 in W's row order. With
// `fp8` (in training, H a multiple of 16) the two products in fp8 (model/ops/fp8.h), either path.
std::array<torch::Tensor, 6> adaln_split6(const torch::nn::LinearImpl& lin, const torch::Tensor& silu_c,
                                          bool training, OpPath path, const Fp8Mode& fp8 = {});
// The rows of an adaLN weight or bias [6H, ..] that adaln_split6's two training products use:
// {the shifts' (shift_a, shift_m) [2H, ..], the others' (scale_a, gate_a, scale_m, gate_m) [4H, ..]};
// adaln_join_rows puts such a pair (their gradients) back in W's row order.
std::array<torch::Tensor, 2> adaln_split_rows(const torch::Tensor& t);
torch::Tensor adaln_join_rows(const torch::Tensor& shifts, const torch::Tensor& others);

// DESIGN §3.6 MLP tail: fc2(dropout(GELU(u))) for u = fc1(x) [B,N,hidden]. In training the dropout
// mask is drawn here (dropout_bits) and one autograd op keeps only u and the bits — GELU and
// dropout are recomputed in backward instead of keeping their two outputs (8 of the ~64 bytes a
// block keeps per token and hidden unit). Every device; the output is in u's dtype (the matmul
// dtype under autocast). With `fp8` (in training) fc2's products in fp8: the op then keeps aᵀ in
// fp8 too (1 byte per element) for fc2's weight gradient.
torch::Tensor gelu_dropout_linear(const torch::Tensor& u, const torch::nn::LinearImpl& fc2, double p, bool training,
                                  OpPath path, const Fp8Mode& fp8 = {});

// DESIGN §3.6 the whole MLP in training, fc2(dropout(GELU(fc1(x)))), as one autograd op that keeps
// x, fc1's weight in x's dtype and the mask, and recomputes fc1's output u in backward (the
// generator's `set_recompute_mlp`): the block no longer keeps u ([B,N,4H]: 8 bytes per token and
// hidden unit in bf16) for one more product per block (fc1's forward). The dropout mask is drawn as
// gelu_dropout_linear draws it, so the RNG stream, the values and the gradients are those of
// gelu_dropout_linear(linear(fc1, x)) (bit for bit on the fused path; up to the products' order of
// summation on the plain one). Every device. With `fp8` both products in fp8, x kept in e4m3 (both
// layouts) instead: the values and gradients of the fp8 ops kept apart, bit for bit.
torch::Tensor mlp_recomputing(const torch::Tensor& x, const torch::nn::LinearImpl& fc1,
                              const torch::nn::LinearImpl& fc2, double p, OpPath path, const Fp8Mode& fp8 = {});
// The same with a given mask (bits; undefined = no dropout). For tests.
torch::Tensor mlp_recomputing_masked(const torch::Tensor& x, const torch::Tensor& bits, double p,
                                     const torch::nn::LinearImpl& fc1, const torch::nn::LinearImpl& fc2, OpPath path,
                                     const Fp8Mode& fp8 = {});

// The same op with a given mask (bits; undefined = no dropout): the plain composition and the op
// with explicit backward. For tests.
torch::Tensor gelu_dropout_linear_plain(const torch::Tensor& u, const torch::Tensor& bits, double p,
                                        const torch::Tensor& w, const torch::Tensor& b);
torch::Tensor gelu_dropout_linear_saving(const torch::Tensor& u, const torch::Tensor& bits, double p,
                                         const torch::Tensor& w, const torch::Tensor& b, OpPath path,
                                         const Fp8Mode& fp8 = {});

}  // namespace rar::model
