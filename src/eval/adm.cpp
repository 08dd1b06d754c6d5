// adm.cpp — see adm.h.
#include "eval/adm.h"

#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "util/error.h"

namespace rar::eval {

namespace {

// One axis of TensorFlow's legacy resize: for each destination index, the two source indices and
// the weight of the upper one (float32 arithmetic, as the op's CPU and GPU kernels).
struct Axis {
  torch::Tensor lower, upper, lerp;
};
Axis axis_weights(int64_t in, int64_t out, const torch::Device& device) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  std::vector<int64_t> lo(out), hi(out);
  std::vector<float> w(out);
  for (int64_t o = 0; o < out; ++o) {
    const float f = static_cast<float>(o) * scale;
    const float fl = std::floor(f);
    lo[o] = std::max<int64_t>(static_cast<int64_t>(fl), 0);
    hi[o] = std::min<int64_t>(static_cast<int64_t>(std::ceil(f)), in - 1);
    w[o] = f - fl;
  }
  auto i64 = torch::TensorOptions(torch::kInt64);
  return {torch::tensor(lo, i64).to(device), torch::tensor(hi, i64).to(device),
          torch::tensor(w, torch::TensorOptions(torch::kFloat32)).to(device)};
}

}  // namespace

torch::Tensor tf_resize_bilinear(const torch::Tensor& nhwc, int64_t size) {
  check(nhwc.dim() == 4, "resize: expected images [N,H,W,C], got ", nhwc.sizes());
  auto x = nhwc.to(torch::kFloat32).contiguous();
  const auto dev = x.device();
  const Axis ys = axis_weights(x.size(1), size, dev), xs = axis_weights(x.size(2), size, dev);
  auto top = x.index_select(1, ys.lower), bottom = x.index_select(1, ys.upper);
  auto tl = top.index_select(2, xs.lower), tr = top.index_select(2, xs.upper);
  auto bl = bottom.index_select(2, xs.lower), br = bottom.index_select(2, xs.upper);
  const auto xl = xs.lerp.view({1, 1, size, 1}), yl = ys.lerp.view({1, size, 1, 1});
  // top = tl + (tr − tl)·x, bottom = bl + (br − bl)·x, out = top + (bottom − top)·y
  auto t = tl + (tr - tl) * xl;
  auto b = bl + (br - bl) * xl;
  return t + (b - t) * yl;
}

AdmActivations adm_activations(FidInception& net, const torch::Tensor& images) {
  check(images.dim() == 4 && images.size(3) == 3 && images.scalar_type() == torch::kUInt8,
        "ADM activations: expected uint8 images [N,H,W,3], got ", images.sizes(), " ", c10::toString(images.scalar_type()));
  torch::NoGradGuard ng;
  const auto dev = net->fc->weight.device();
  auto x = tf_resize_bilinear(images.to(dev), 299);
  x = x.sub(128.0).mul(1.0 / 128.0).permute({0, 3, 1, 2}).contiguous();  // the graph's Sub and Mul
  auto [pool, mixed] = net->pool3_and_mixed6_conv(x);
  const int64_t n = images.size(0);
  auto spatial = mixed.narrow(1, 0, 7).permute({0, 2, 3, 1}).reshape({n, -1});  // NHWC: 17·17·7
  return {pool.to(torch::kFloat32).cpu().contiguous(), spatial.to(torch::kFloat32).cpu().contiguous()};
}

torch::Tensor adm_squared_distances(const torch::Tensor& u_in, const torch::Tensor& v_in) {
  check(u_in.dim() == 2 && v_in.dim() == 2 && u_in.size(1) == v_in.size(1), "distances: features of different sizes");
  auto u = u_in.to(torch::kFloat32), v = v_in.to(torch::kFloat32);
  auto h = [](const torch::Tensor& t) { return t.to(torch::kHalf).to(torch::kFloat32); };  // one fp16 rounding
  // fp16: the inputs, each square, each norm, the product (fp32 accumulation) and every step of
  // |u|² − 2u·v + |v|² rounded to fp16
  auto u16 = h(u), v16 = h(v);
  auto nu = h(h(u16 * u16).sum(1)).unsqueeze(1), nv = h(h(v16 * v16).sum(1)).unsqueeze(0);
  auto uv = h(u16.matmul(v16.t()));
  auto d = h(h(nu - h(2 * uv)) + nv).clamp_min(0);
  if (torch::isfinite(d).all().item<bool>() && torch::isfinite(h(u * u).sum(1)).all().item<bool>()) return d;
  // the fp32 fallback of a block whose fp16 values overflow
  auto nu32 = (u * u).sum(1).unsqueeze(1), nv32 = (v * v).sum(1).unsqueeze(0);
  return (nu32 - 2 * u.matmul(v.t()) + nv32).clamp_min(0);
}

namespace {
constexpr int64_t kRows = 1000, kCols = 10000;  // blocks: kRows x every column, computed kCols at a time
}

torch::Tensor manifold_radii(const torch::Tensor& features, int64_t k) {
  const int64_t n = features.size(0);
  check(features.dim() == 2 && n > k, "precision/recall: need more than ", k, " feature vectors, got ", features.sizes());
  auto f = features.to(torch::kFloat32).contiguous();
  std::vector<torch::Tensor> radii;
  for (int64_t r = 0; r < n; r += kRows) {
    auto rows = f.narrow(0, r, std::min(kRows, n - r));
    std::vector<torch::Tensor> cols;
    for (int64_t c = 0; c < n; c += kCols) cols.push_back(adm_squared_distances(rows, f.narrow(0, c, std::min(kCols, n - c))));
    // the (k+1)-th smallest: the k-th neighbour once the row's own zero distance is counted
    radii.push_back(std::get<0>(torch::kthvalue(torch::cat(cols, 1), k + 1, 1)));
  }
  return torch::cat(radii);
}

std::pair<double, double> adm_precision_recall(const torch::Tensor& reference, const torch::Tensor& samples, int64_t k,
                                               const torch::Device& device) {
  auto ref = reference.to(device, torch::kFloat32).contiguous(), smp = samples.to(device, torch::kFloat32).contiguous();
  const auto ref_radii = manifold_radii(ref, k), smp_radii = manifold_radii(smp, k);
  const auto flags = torch::TensorOptions(torch::kBool).device(device);
  auto smp_in = torch::zeros({smp.size(0)}, flags), ref_in = torch::zeros({ref.size(0)}, flags);
  for (int64_t r = 0; r < ref.size(0); r += kRows) {
    const int64_t nr = std::min(kRows, ref.size(0) - r);
    for (int64_t c = 0; c < smp.size(0); c += kCols) {
      const int64_t nc = std::min(kCols, smp.size(0) - c);
      auto d = adm_squared_distances(ref.narrow(0, r, nr), smp.narrow(0, c, nc));
      // a sample inside some reference vector's ball; a reference vector inside some sample's
      auto s_in = smp_in.narrow(0, c, nc), r_in = ref_in.narrow(0, r, nr);
      s_in.logical_or_(d.le(ref_radii.narrow(0, r, nr).unsqueeze(1)).any(0));
      r_in.logical_or_(d.le(smp_radii.narrow(0, c, nc).unsqueeze(0)).any(1));
    }
  }
  return {smp_in.to(torch::kFloat64).mean().item<double>(), ref_in.to(torch::kFloat64).mean().item<double>()};
}

double adm_inception_score(const torch::Tensor& pool, const torch::Tensor& softmax_weight, int64_t split) {
  check(pool.dim() == 2 && softmax_weight.dim() == 2 && pool.size(1) == softmax_weight.size(0) && pool.size(0) > 0,
        "Inception Score: features ", pool.sizes(), " do not fit the softmax weight ", softmax_weight.sizes());
  // float32 all the way, as the evaluator's TensorFlow softmax and numpy arithmetic
  auto preds = torch::softmax(pool.to(torch::kFloat32).matmul(softmax_weight.to(torch::kFloat32)), 1);
  std::vector<double> scores;
  for (int64_t i = 0; i < preds.size(0); i += split) {
    auto part = preds.narrow(0, i, std::min(split, preds.size(0) - i));
    auto kl = part * (part.log() - part.mean(0, /*keepdim=*/true).log());
    scores.push_back(std::exp(kl.sum(1).mean().item<float>()));
  }
  double mean = 0;
  for (double s : scores) mean += s;
  return mean / static_cast<double>(scores.size());
}

}  // namespace rar::eval
