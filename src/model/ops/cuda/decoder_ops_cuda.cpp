// decoder_ops_cuda.cpp — the fused path of model/ops/decoder_ops (CUDA builds only): GroupNorm+SiLU
// on channels-last activations (kernels/group_norm.cu) and nearest 2x upsampling (kernels/upsample.cu).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/group_norm.h"
#include "kernels/upsample.h"
#include "model/ops/cuda/common.h"
#include "model/ops/fused.h"
#include "model/ops/fused_paths.h"

namespace rar::model::fused {

std::optional<torch::Tensor> group_norm_silu(const torch::nn::GroupNorm& gn, const torch::Tensor& x, bool silu) {
  const auto& o = gn->options;
  if (!torch::GradMode::is_enabled() && x.is_cuda() && x.dim() == 4 &&
      kernel_dtype(x) && x.is_contiguous(at::MemoryFormat::ChannelsLast) && o.affine() && gn->weight.defined() &&
      kernel_dtype(gn->weight) && kernel_dtype(gn->bias) && x.size(1) == o.num_channels() &&
      reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 && kernels::group_norm_nhwc_supported(x.size(1), o.num_groups())) {
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
    auto y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    auto ws = torch::empty({kernels::group_norm_nhwc_workspace(N, HW, C, o.num_groups())},
                           x.options().dtype(torch::kFloat64));
    kernels::group_norm_nhwc(kdt(x), x.data_ptr(), N, HW, C, o.num_groups(), f32(gn->weight).data_ptr<float>(),
                             f32(gn->bias).data_ptr<float>(), static_cast<float>(o.eps()), silu, y.data_ptr(),
                             ws.data_ptr<double>(), stream());
    return y;
  }
  return std::nullopt;
}

std::optional<torch::Tensor> upsample_nearest2x(const torch::Tensor& x) {
  if (!torch::GradMode::is_enabled() && x.is_cuda() && x.dim() == 4 && kernel_dtype(x)) {
    const bool nchw = x.is_contiguous(), nhwc = !nchw && x.is_contiguous(at::MemoryFormat::ChannelsLast);
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    if (nchw || nhwc) {
      auto y = torch::empty({N, C, 2 * H, 2 * W}, x.options(),
                            nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
      if (kernels::upsample_nearest2x_supported(N, C, H, W, nhwc, x.data_ptr(), y.data_ptr())) {
        c10::cuda::CUDAGuard guard(x.device());
        kernels::upsample_nearest2x(kdt(x), x.data_ptr(), N, C, H, W, nhwc, y.data_ptr(), stream());
        return y;
      }
    }
  }
  return std::nullopt;
}

}  // namespace rar::model::fused
