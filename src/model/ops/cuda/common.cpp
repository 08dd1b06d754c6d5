// common.cpp — see common.h.
#include "model/ops/cuda/common.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>

#include <cmath>
#include <iterator>
#include <mutex>
#include <unordered_map>

#include "model/ops/fused_paths.h"

namespace rar::model::fused {

bool built() { return true; }

K::DType kdt(const torch::Tensor& t) { return t.scalar_type() == torch::kBFloat16 ? K::DType::bf16 : K::DType::f32; }
bool kernel_dtype(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16;
}
cudaStream_t stream() { return at::cuda::getCurrentCUDAStream(); }

K::PhiloxArgs philox_args(const torch::Device& device, uint64_t increment) {
  at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator(device.has_index() ? device.index() : -1);
  at::PhiloxCudaState st;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    st = gen.get<at::CUDAGeneratorImpl>()->philox_cuda_state(increment);
  }
  K::PhiloxArgs a;
  a.captured = st.captured_;
  if (st.captured_) {
    a.seed_ptr = st.seed_.ptr;
    a.offset_ptr = st.offset_.ptr;
    a.offset_intragraph = st.offset_intragraph_;
  } else {
    a.seed = st.seed_.val;
    a.offset = st.offset_.val;
  }
  return a;
}

// A [B,N,H] view whose rows (b,n) all sit `stride(1)` elements apart with contiguous columns (a
// chunk of a contiguous [B,N,6H] projection is one).
bool uniform_rows(const torch::Tensor& t) {
  return t.dim() == 3 && t.stride(2) == 1 && (t.size(0) == 1 || t.stride(0) == t.size(1) * t.stride(1));
}
// LayerNorm affine parameters, or an empty tensor for none (autograd Functions take no undefined inputs).
float* opt_ptr(const torch::Tensor& t) { return t.defined() && t.numel() > 0 ? t.data_ptr<float>() : nullptr; }

// The kernels take float32 affine parameters; a bf16 model's (bf16 inference) are cast, a few
// hundred values.
bool affine_ok(const torch::nn::LayerNorm& ln) {
  const auto& w = ln->weight;
  return (!w.defined() && !ln->bias.defined()) ||
         (w.defined() && ln->bias.defined() && kernel_dtype(w) && kernel_dtype(ln->bias));
}
// A bf16 model's affine parameters, cast once and kept: a decode step would otherwise launch
// four tiny cast kernels per block (a tenth of a rar_xl step's kernels). Keyed by the parameter's
// TensorImpl, of which each entry holds a weak reference (so the address cannot be reused while
// the entry lives); an entry is valid while the version counter and storage are unchanged.
// Trainable tensors are cast every time.
torch::Tensor f32(const torch::Tensor& t) {
  if (t.scalar_type() == torch::kFloat32 && t.is_contiguous()) return t;
  if (t.requires_grad() && torch::GradMode::is_enabled()) return t.to(torch::kFloat32).contiguous();
  struct Entry {
    c10::weak_intrusive_ptr<c10::TensorImpl> source;
    int64_t version;
    const void* data;
    torch::Tensor cast;
  };
  static std::mutex mu;
  static std::unordered_map<const c10::TensorImpl*, Entry> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(t.unsafeGetTensorImpl());
  if (it != cache.end() && it->second.version == t._version() && it->second.data == t.data_ptr())
    return it->second.cast;
  for (auto e = cache.begin(); e != cache.end();)  // entries of freed parameters go on an insert
    e = e->second.source.expired() ? cache.erase(e) : std::next(e);
  auto cast = t.detach().to(torch::kFloat32).contiguous();
  cache.insert_or_assign(t.unsafeGetTensorImpl(),
                         Entry{c10::weak_intrusive_ptr<c10::TensorImpl>(t.getIntrusivePtr()), t._version(),
                               t.data_ptr(), cast});
  return cast;
}

float attention_scale(int64_t hd) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))); }

}  // namespace rar::model::fused
