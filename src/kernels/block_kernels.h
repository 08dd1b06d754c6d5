// block_kernels.h — CUDA kernels for the memory-bound steps of a transformer block (CUDA builds
// only): ln_modulate.cu, qk_norm.cu, gated_residual.cu, gelu_dropout.cu, dropout_bits.cu, column_sums.cu, fp8_cast.cu. Raw pointers
// and one
// stream: the autograd wrappers and checks are model/ops/cuda/block_ops_cuda.cpp, the plain
// LibTorch path they are tested against model/ops/block_ops.cpp.
//
// Layouts: a "row" is one position's H values. x, y, gradients are contiguous [rows, H]; the
// adaLN chunks (shift, scale, gate) are views into the [rows, 6H] projection, so each has its own
// row stride (elements). Float statistics (mean, rstd) are one value per normalised row.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace rar::kernels {

enum class DType { f32, bf16 };

// Largest normalised width the register-resident kernels take (callers fall back above it).
constexpr int kMaxWidth = 2048;

// y = (LN(x)·w + b) · (1 + scale) + shift (w, b may be null: no affine). x in `tx`, shift/scale/y in
// `t`; statistics in float. Writes mean/rstd per row.
void ln_modulate_forward(DType tx, DType t, const void* x, int64_t rows, int H, const float* w, const float* b,
                         const void* shift, int64_t shift_stride, const void* scale, int64_t scale_stride,
                         float eps, void* y, float* mean, float* rstd, cudaStream_t stream);

// Inference: the gated residual and the next modulated LayerNorm in one pass: x_out = x + gate·ya
// (rounded to tx, like the separate residual op), y = (LN(x_out)·w + b)·(1 + scale) + shift. No
// statistics kept. Needs rows aligned to 4 elements (residual_ln_modulate_supported; throws otherwise).
bool residual_ln_modulate_supported(DType tx, DType t, const void* x, const void* gate, int64_t gate_stride,
                                    const void* ya, const void* shift, int64_t shift_stride, const void* scale,
                                    int64_t scale_stride, const void* x_out, const void* y, int H, const float* w,
                                    const float* b);
void residual_ln_modulate_forward(DType tx, DType t, const void* x, const void* gate, int64_t gate_stride,
                                  const void* ya, int64_t rows, int H, const float* w, const float* b,
                                  const void* shift, int64_t shift_stride, const void* scale, int64_t scale_stride,
                                  float eps, void* x_out, void* y, cudaStream_t stream);

// A bias gradient: out[c] = sum over rows of g[r, c] in float32, for bf16 g [rows, N] contiguous
// (column_sums_supported: N a multiple of 8 up to 8192, g 16-byte aligned). part: scratch of
// column_sums_partial_rows(rows) x N floats. Deterministic (fixed grid and orders).
bool column_sums_supported(const void* g, int64_t rows, int64_t N);
int64_t column_sums_partial_rows(int64_t rows);
void column_sums(const void* g, int64_t rows, int N, float* part, float* out, cudaStream_t stream);
// out[c] = the sum of part[b, c] over b < blocks (partial rows written by another kernel, e.g.
// fp8_quantize's col_part), in column_sums' fixed order.
void column_sums_of_partials(const float* part, int64_t blocks, int N, float* out, cudaStream_t stream);

// Gradients of ln_modulate given gy (contiguous [rows,H], dtype t): gx (tx), gscale (t, contiguous)
// and, with an affine, partial sums for w and b: gw_part/gb_part [ln_modulate_partial_rows(rows), H]
// (every row written; sum them over dim 0). The gradient of shift is gy itself. gx_add (tx,
// contiguous [rows,H], or null) is added to gx: the residual stream's other gradient, summed as
// autograd would sum the two (gx rounded to tx first), bit for bit.
int64_t ln_modulate_partial_rows(int64_t rows);
void ln_modulate_backward(DType tx, DType t, const void* gy, const void* x, const float* mean, const float* rstd,
                          const float* w, const float* b, const void* scale, int64_t scale_stride, int64_t rows,
                          int H, void* gx, const void* gx_add, void* gscale, float* gw_part, float* gb_part,
                          cudaStream_t stream);

// The attention input step: qkv [B,N,3,heads,hd] (the qkv projection's output) -> q = LN(q)·wq+bq,
// k = LN(k)·wk+bk, v, each written [B,N,heads,hd] contiguous (attention reads them as [B,heads,N,hd]
// views, and its output then needs no transpose copy). mean/rstd: [B*N*2*heads], or null (not
// written). With cache_slot (a device pointer; N = 1): k and v are KV caches [B,heads,cache_cap,hd]
// and this position's key and value go to slot *cache_slot (a decode step's append, graph-replayable).
// cache_fp8: the caches hold fp8 e4m3 (k rounded to bf16 first, as the bf16 path stores it;
// saturating at +-448); bf16 input and a head dim qk_norm_fp8_cache_supported takes.
void qk_norm_split_forward(DType t, const void* qkv, int64_t B, int64_t N, int heads, int hd, const float* wq,
                           const float* bq, const float* wk, const float* bk, float eps, void* q, void* k, void* v,
                           float* mean, float* rstd, cudaStream_t stream, int64_t cache_cap = 0,
                           const int64_t* cache_slot = nullptr, bool cache_fp8 = false);
bool qk_norm_fp8_cache_supported(DType t, int hd);

// Its gradient: gq, gk, gv [B,N,heads,hd] contiguous -> gqkv [B,N,3,heads,hd], and partial sums
// part [qk_norm_partial_rows(B·N), 4, hd] for (wq, bq, wk, bk) (every row written; sum over dim 0).
int64_t qk_norm_partial_rows(int64_t positions);
void qk_norm_split_backward(DType t, const void* gq, const void* gk, const void* gv, const void* qkv,
                            const float* mean, const float* rstd, const float* wq, const float* wk, int64_t B,
                            int64_t N, int heads, int hd, void* gqkv, float* part, cudaStream_t stream);

// Dropout masks are bits: element j of byte i in bit j, set = kept (ceil(n/8) bytes for n elements).
// A mask is drawn from a Philox stream (the default CUDA generator's: seed and offset, or, inside a
// CUDA graph capture, device pointers read at replay plus an offset within the graph), one
// subsequence per thread of a fixed grid, so the bits depend only on (seed, offset, n).
struct PhiloxArgs {
  uint64_t seed = 0, offset = 0;
  const int64_t* seed_ptr = nullptr;    // captured: the seed lives here...
  const int64_t* offset_ptr = nullptr;  // ... and the offset here, plus offset_intragraph
  uint64_t offset_intragraph = 0;
  bool captured = false;
};
// How far a mask of n elements advances the Philox offset (the generator's increment).
uint64_t dropout_bits_increment(int64_t n);
// bits[ceil(n/8)]: each of n elements kept with probability `keep`; bits past n are 0.
void dropout_bits(PhiloxArgs rng, float keep, int64_t n, uint8_t* bits, cudaStream_t stream);

// Gated residual with dropout on the branch: out = x + gate · yd, yd = keep ? round_t(y · scale) : 0
// (bits null: yd = y), rounded to tx. x, y, out contiguous [rows, H]; out may be x's type only.
void gated_residual_forward(DType tx, DType t, const void* x, const void* gate, int64_t gate_stride, const void* y,
                            const uint8_t* bits, float scale, int64_t rows, int H, void* out, cudaStream_t stream);
// Gradient of out = x + gate · yd for gate and y (x's gradient is g itself): one pass over g.
// ggate = g · yd; gy = keep ? round_t(round_t(g · gate) · scale) : 0 (the plain path's two roundings:
// the residual's gradient of yd, then dropout's).
void gated_residual_backward(DType tx, DType t, const void* g, const void* gate, int64_t gate_stride, const void* y,
                             const uint8_t* bits, float scale, int64_t rows, int H, void* ggate, void* gy,
                             cudaStream_t stream);

// The MLP's GELU + dropout over n elements (contiguous; n % 8 == 0, 16-byte aligned: see
// gelu_dropout_supported): a = GELU(u) · keep · scale, exact (erf) GELU, `bits` the mask (null: keep all).
bool gelu_dropout_supported(DType t, const void* u, int64_t n);
void gelu_dropout_forward(DType t, const void* u, const uint8_t* bits, float scale, int64_t n, void* a,
                          cudaStream_t stream);
// Backward with the forward recomputed: g holds the gradient of a and receives the gradient of u;
// a receives GELU(u) · keep · scale again (for the next matmul's weight gradient; a null: not written).
void gelu_dropout_backward(DType t, const void* u, const uint8_t* bits, float scale, int64_t n, void* g, void* a,
                           cudaStream_t stream);

// ---------------------------------------------------------------- fp8 operands (fp8_cast.cu)
// A product's operand in fp8 with one scale per tensor (model/ops/fp8.h): amax = max |x| over the
// tensor ("current" scaling) or a given magnitude ("delayed"), scale = largest / max(amax, 1e-30), q = round(x · scale) saturated
// at +-largest (e4m3: 448, e5m2: 57344), scale_inv = amax / largest. Exactly the plain path's float32
// arithmetic (correctly rounded division and product, round to nearest even).
enum class Fp8Format { e4m3, e5m2 };
// amax_bits: one uint32 (zeroed here first), receives the float bits of max |x| (NaN wins). x
// contiguous, n elements.
void fp8_amax(DType t, const void* x, int64_t n, unsigned* amax_bits, cudaStream_t stream);
// x [rows, cols] contiguous (cols % 16 == 0, 16-byte aligned: fp8_quantize_supported) quantised with
// the scale amax_bits implies, into out [rows_pad, cols] and/or out_t [cols, rows_pad] (the
// transposed layout; either may be null), rows past `rows` up to rows_pad written as zeros; scale_inv
// (one float) receives amax / largest. col_part (may be null): x's float32 column sums over each
// tile of rows, [fp8_quantize_row_tiles(rows_pad), cols] (column_sums_of_partials adds them up) —
// a gradient's bias gradient from the pass that reads it anyway. record (may be null): one uint32
// holding a non-negative float's bits, atomically max'ed with max |x|'s bits (NaN wins).
bool fp8_quantize_supported(const void* x, int64_t cols);
int64_t fp8_quantize_row_tiles(int64_t rows_pad);
void fp8_quantize(DType t, Fp8Format f, const void* x, int64_t rows, int64_t rows_pad, int64_t cols,
                  const unsigned* amax_bits, uint8_t* out, uint8_t* out_t, float* scale_inv, float* col_part,
                  unsigned* record, cudaStream_t stream);

}  // namespace rar::kernels
