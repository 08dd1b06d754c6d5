// fp8_cuda.cpp — the fused path of model/ops/fp8's casts (CUDA builds only): kernels/fp8_cast.cu.
#include <c10/cuda/CUDAGuard.h>

#include "model/ops/cuda/common.h"
#include "model/ops/fp8.h"
#include "model/ops/fused_paths.h"

namespace rar::model::fused {

namespace {
// A slot's element as the kernels' float bits (non-negative floats order as their bits do).
unsigned* float_bits(const torch::Tensor& t, const torch::Tensor& x, const char* what) {
  if (!t.defined()) return nullptr;
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.numel() == 1 && t.device() == x.device(), "fp8_quantize: the slot's ",
        what, " must be one float32 element on ", x.device().str());
  return reinterpret_cast<unsigned*>(t.data_ptr<float>());
}
}  // namespace

std::optional<Fp8Tensor> fp8_quantize(const torch::Tensor& t, at::ScalarType format, Fp8Layout layout,
                                      const Fp8Slot& slot, torch::Tensor* column_sums) {
  if (!t.is_cuda() || t.dim() != 2 || !kernel_dtype(t)) return std::nullopt;
  const auto x = t.contiguous();
  const int64_t rows = x.size(0), cols = x.size(1), rows_pad = fp8_rows_padded(rows);
  if (!K::fp8_quantize_supported(x.data_ptr(), cols)) return std::nullopt;
  c10::cuda::CUDAGuard guard(x.device());
  // the magnitude to scale by: the slot's (delayed scaling), or max |x| from a pass of its own
  torch::Tensor amax;
  const unsigned* amax_bits = float_bits(slot.scale_by, x, "scale_by");
  if (!amax_bits) {
    amax = torch::empty({1}, x.options().dtype(torch::kInt32));
    auto* own = reinterpret_cast<unsigned*>(amax.data_ptr<int32_t>());
    K::fp8_amax(kdt(x), x.data_ptr(), x.numel(), own, stream());
    amax_bits = own;
  }
  unsigned* record = float_bits(slot.record, x, "record");
  Fp8Tensor r;
  r.rows = rows;
  const auto o = x.options().dtype(format);
  if (layout != Fp8Layout::transposed) r.data = torch::empty({rows_pad, cols}, o);
  if (layout != Fp8Layout::rows) r.data_t = torch::empty({cols, rows_pad}, o);
  const auto f32 = x.options().dtype(torch::kFloat32);
  r.scale_inv = torch::empty({}, f32);
  torch::Tensor part;
  if (column_sums) part = torch::empty({K::fp8_quantize_row_tiles(rows_pad), cols}, f32);
  K::fp8_quantize(kdt(x), format == torch::kFloat8_e5m2 ? K::Fp8Format::e5m2 : K::Fp8Format::e4m3, x.data_ptr(), rows,
                  rows_pad, cols, amax_bits, r.data.defined() ? static_cast<uint8_t*>(r.data.data_ptr()) : nullptr,
                  r.data_t.defined() ? static_cast<uint8_t*>(r.data_t.data_ptr()) : nullptr,
                  r.scale_inv.data_ptr<float>(), part.defined() ? part.data_ptr<float>() : nullptr, record, stream());
  if (column_sums) {
    *column_sums = torch::empty({cols}, f32);
    K::column_sums_of_partials(part.data_ptr<float>(), part.size(0), static_cast<int>(cols),
                               column_sums->data_ptr<float>(), stream());
  }
  return r;
}

}  // namespace rar::model::fused
