// fp8.h — the block's products in fp8 for training (`training.fp8: true`, off by default;
// GeneratorImpl::use_fp8): inputs and weights as e4m3, output gradients as e5m2, each with one scale
// per tensor — from its own largest magnitude ("current" scaling: a pass over the tensor before it
// is cast, nothing carried between steps), or from the largest magnitude that operand had over the
// last steps ("delayed", `training.fp8_scaling: delayed`: no pass of its own, the cast records the
// tensor's largest magnitude for the steps after; the history is model/fp8_history.h's) —
// multiplied by LibTorch's scaled matmul (Hopper's fp8 tensor cores on CUDA; an emulation on the
// CPU, which is what the CPU tests run). Forward products
// accumulate fast, gradient products precisely (Transformer Engine's recipe). Used by the block's
// products (block_ops: linear, the MLP ops, adaln_split6); master weights, AdamW, the final adaLN
// layer and the head stay as they are.
//
// The scaled matmul takes its left operand row-major and its right one column-major, so each
// product wants its operands in a given layout: y = a·Wᵀ reads a and W as they are; a's gradient
// g·W reads g and Wᵀ; W's gradient gᵀ·a reads gᵀ and aᵀ. to_fp8 writes the layouts asked for in the
// same pass (fused path: kernels/fp8_cast.cu, one pass for the largest magnitude, one that writes
// both layouts; plain path: LibTorch ops, the reference the kernels are tested against bit for bit).
#pragma once
#include <torch/torch.h>

#include "model/ops/fused.h"
#include "util/gpu.h"

namespace rar::model {

// Which layouts of a [rows, cols] operand to write: row-major, transposed ([cols, rows]), or both.
enum class Fp8Layout { rows, transposed, both };

// Where one operand's scale comes from and where its largest magnitude goes: `scale_by` (float32,
// one element; undefined: the operand's own largest magnitude, current scaling) is the magnitude
// mapped onto the format's largest value; `record` (float32, one element; undefined: none) becomes
// max(record, the operand's largest magnitude) — NaN wins, as a NaN operand must not pass unseen.
struct Fp8Slot {
  torch::Tensor scale_by, record;
};

// An fp8 op's operands' slots: `slots` undefined for current scaling without records; else a
// float32 [n, 2] view of the run's history (model/fp8_history.h), row i operand i's: column 0 the
// magnitude to scale by, column 1 the record. `delayed` false (a history that holds no step yet):
// current scaling, recorded. Each op names its operands' rows (kFp8Linear..., kFp8Mlp..., kFp8Adaln...).
struct Fp8Scaling {
  torch::Tensor slots;
  bool delayed = false;
  Fp8Slot slot(int64_t i) const;
  Fp8Scaling rows(int64_t first, int64_t n) const;  // operands [first, first + n) as an op's own
};
// Whether an op runs its products in fp8 (where their shapes allow) and how their operands are
// scaled: off (the default: the model's dtype), or on with current scaling (`scaling` without
// slots) or with the history's rows. The block ops take this one value (model/ops/block_ops.h).
struct Fp8Mode {
  bool on = false;
  Fp8Scaling scaling;
};

// An autograd op's scaling, kept for its backward (in saved_data: the slots change in place, which
// a saved variable's version check would refuse).
void save_scaling(torch::autograd::AutogradContext* ctx, const Fp8Scaling& s);
Fp8Scaling saved_scaling(torch::autograd::AutogradContext* ctx);

// The rows of each op's operands in its slots.
enum Fp8LinearOperand : int64_t { kFp8LinearInput, kFp8LinearWeight, kFp8LinearGrad, kFp8LinearOperands };
// The MLP (fc1 then fc2): fc1's three as a linear's, then fc2's (its input a = GELU(u)·mask).
enum Fp8MlpOperand : int64_t { kFp8MlpFc1 = 0, kFp8MlpFc2 = kFp8LinearOperands, kFp8MlpOperands = 2 * kFp8LinearOperands };
enum Fp8AdalnOperand : int64_t {
  kFp8AdalnInput, kFp8AdalnShiftWeight, kFp8AdalnScaleWeight, kFp8AdalnShiftGrad, kFp8AdalnScaleGrad, kFp8AdalnOperands
};

// t ≈ data · scale_inv, rows zero-padded to a multiple of 16 (the scaled matmul's rule).
struct Fp8Tensor {
  torch::Tensor data;       // [rows_pad, cols] row-major (torch::kFloat8_e4m3fn or kFloat8_e5m2), or undefined
  torch::Tensor data_t;     // [cols, rows_pad], or undefined
  torch::Tensor scale_inv;  // float32, one element: max |t| / the format's largest finite value
  int64_t rows = 0;         // t's rows (the rest of rows_pad are zeros)
};

// t [rows, cols] (float32 or bf16; cols a multiple of 16) in `format`: scale = largest / max(amax,
// 1e-30), data = round(t · scale) saturated at the largest finite value (e4m3: 448, e5m2: 57344);
// amax is max |t|, or slot.scale_by where given; slot.record is max'ed with max |t| where given.
Fp8Tensor to_fp8(const torch::Tensor& t, at::ScalarType format, Fp8Layout layout, OpPath path,
                 const Fp8Slot& slot = {});
int64_t fp8_rows_padded(int64_t rows);  // the next multiple of 16

// y = a·Wᵀ (+ bias, cast to `out`; undefined for none) in `out`, a's rows [a.rows, N]: reads a.data
// and w.data (a [M, K], W [N, K]).
torch::Tensor fp8_forward(const Fp8Tensor& a, const Fp8Tensor& w, const torch::Tensor& bias, at::ScalarType out);
// Its gradients from the output gradient g [a.rows, N] (contiguous, in the product's dtype), g cast
// to e5m2 here: a's = g·W in `input_dtype` (reads w.data_t), W's = gᵀ·a in float32 (reads a.data_t;
// padded rows are zeros on both sides: they add nothing), b's = g's column sums in float32 (on the
// fused path by the cast's own pass over g, else bias_gradient, block_ops.h).
struct Fp8Grads {
  torch::Tensor input, weight, bias;
};
Fp8Grads fp8_grads(const torch::Tensor& g, const Fp8Tensor& a, const Fp8Tensor& w, at::ScalarType input_dtype,
                   OpPath path, const Fp8Slot& g_slot = {});

// Whether x [.., K] · Wᵀ (W [N, K]) can run in fp8: K and N multiples of 16, a float32 or bf16 x.
bool fp8_product_fits(const torch::Tensor& x, const torch::Tensor& w);

// Why a device cannot run the fp8 products, as a one-line error naming `what` (the setting), or ""
// where it can: LibTorch's scaled matmul needs a CUDA device of compute capability 8.9 or above
// (Ada, Hopper and later); the CPU emulates it. check_fp8_device fails with that line.
std::string fp8_device_problem(const torch::Device& device, const gpu::DeviceKind& kind, const std::string& what);
void check_fp8_device(const torch::Device& device, const std::string& what);

// y = x·Wᵀ + b with x and W in e4m3, the gradients from the output gradient in e5m2: x's in x's
// dtype, W's written in float32 by the product (then W's dtype), b's summed in float32
// (bias_gradient). y in x's dtype. Keeps xᵀ and Wᵀ in fp8 for backward (1 byte per element).
// `scaling`: its kFp8Linear... rows.
torch::Tensor fp8_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, OpPath path,
                         const Fp8Scaling& scaling = {});

}  // namespace rar::model
