// nearest.cpp — see nearest.h.
#include "eval/nearest.h"

#include <torch/torch.h>

#include "util/error.h"
#include "util/progress.h"

namespace rar::eval {

torch::Tensor pixel_rows(const data::ImageBatches& images, int64_t n) {
  if (n <= 0 || n > images.size()) n = images.size();
  check(n > 0, "nearest images: no images");
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < n; i += 4096) {
    const int64_t m = std::min<int64_t>(4096, n - i);
    parts.push_back(images.range(i, m).reshape({m, -1}).to(torch::kFloat32).div_(255.0));
  }
  return torch::cat(parts);
}

torch::Tensor nearest_distances(const torch::Tensor& query, const torch::Tensor& base, const torch::Device& device,
                                int64_t chunk) {
  torch::NoGradGuard ng;
  check(query.dim() == 2 && base.dim() == 2 && query.size(1) == base.size(1), "nearest images: samples of ",
        query.size(1), " values against training images of ", base.size(1), " values (different image sizes?)");
  check(base.size(0) > 0 && chunk > 0, "nearest images: no training images");
  const auto b = base.to(device, torch::kFloat32);
  const auto b2 = b.pow(2).sum(1);  // [M]
  std::vector<torch::Tensor> out;
  Progress progress("nearest", query.size(0), "image");
  for (int64_t i = 0; i < query.size(0); i += chunk) {
    const int64_t m = std::min(chunk, query.size(0) - i);
    const auto q = query.narrow(0, i, m).to(device, torch::kFloat32);
    // squared distances up to float32 cancellation; the nearest one then exactly
    auto d2 = (q.pow(2).sum(1, true) + b2.unsqueeze(0)).addmm_(q, b.t(), /*beta=*/1, /*alpha=*/-2);
    const auto idx = d2.argmin(1);
    const auto diff = q.to(torch::kFloat64) - b.index_select(0, idx).to(torch::kFloat64);
    out.push_back(diff.pow(2).sum(1).sqrt().cpu());
    progress.update(i + m);
  }
  progress.finish();
  return torch::cat(out);
}

namespace {
double quantile_of(const torch::Tensor& d, double q) {
  auto s = std::get<0>(d.to(torch::kFloat64).sort());
  const int64_t n = s.size(0);
  const auto k = std::min<int64_t>(n - 1, std::max<int64_t>(0, static_cast<int64_t>(q * static_cast<double>(n))));
  return s[k].item<double>();
}
}  // namespace

CopyReport copy_report(const torch::Tensor& sample_d, const torch::Tensor& heldout_d, double quantile) {
  check(sample_d.numel() > 0 && heldout_d.numel() > 0, "nearest images: no distances");
  check(quantile > 0 && quantile < 1, "nearest images: quantile must lie in (0, 1)");
  CopyReport r;
  r.sample_median = quantile_of(sample_d, 0.5);
  r.heldout_median = quantile_of(heldout_d, 0.5);
  r.threshold = quantile_of(heldout_d, quantile);
  r.copies = sample_d.to(torch::kFloat64).lt(r.threshold).to(torch::kFloat64).mean().item<double>();
  return r;
}

}  // namespace rar::eval
