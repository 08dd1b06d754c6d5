// fid.cpp — see fid.h.
#include "eval/fid.h"

#include <cmath>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include <torch/torch.h>

#include "io/npy.h"
#include "io/zip.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::eval {

FeatureStats feature_stats(const torch::Tensor& features) {
  check(features.dim() == 2 && features.size(0) >= 2, "statistics need at least 2 feature rows, got ", features.sizes());
  auto f = features.to(torch::kFloat64);
  FeatureStats s;
  s.count = f.size(0);
  s.mu = f.mean(0);
  auto c = f - s.mu;
  s.sigma = c.t().matmul(c) / static_cast<double>(s.count - 1);
  return s;
}

namespace {
// Symmetric PSD square root through the eigendecomposition (negative round-off clamped to 0).
torch::Tensor psd_sqrt(const torch::Tensor& a) {
  auto [w, v] = torch::linalg_eigh((a + a.t()) / 2);
  return (v * w.clamp_min(0).sqrt().unsqueeze(0)).matmul(v.t());
}
}  // namespace

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  check(a.mu.sizes() == b.mu.sizes() && a.sigma.sizes() == b.sigma.sizes(), "FID: statistics of different sizes (",
        a.mu.size(0), " vs ", b.mu.size(0), " features)");
  auto s1 = a.sigma.to(torch::kFloat64), s2 = b.sigma.to(torch::kFloat64);
  auto diff = a.mu.to(torch::kFloat64) - b.mu.to(torch::kFloat64);
  auto r = psd_sqrt(s1);
  auto m = r.matmul(s2).matmul(r);
  auto eig = torch::linalg_eigvalsh((m + m.t()) / 2).clamp_min(0);
  const double tr_covmean = eig.sqrt().sum().item<double>();
  return diff.dot(diff).item<double>() + s1.trace().item<double>() + s2.trace().item<double>() - 2 * tr_covmean;
}

double frechet_bootstrap_sd(const torch::Tensor& features, const FeatureStats& ref, int64_t n, uint64_t seed) {
  check(n >= 2, "bootstrap: need at least 2 resamples, got ", n);
  check(features.dim() == 2 && features.size(0) >= 2, "bootstrap: need at least 2 feature rows, got ",
        features.sizes());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f = features.to(torch::kFloat64);
  std::vector<double> fids;
  for (int64_t i = 0; i < n; ++i) {
    const auto rows = torch::randint(0, f.size(0), {f.size(0)}, gen, torch::kInt64);
    fids.push_back(frechet_distance(feature_stats(f.index_select(0, rows)), ref));
  }
  return torch::tensor(fids, torch::kFloat64).std().item<double>();
}

std::pair<double, double> inception_score(const torch::Tensor& logits, int64_t splits) {
  check(logits.dim() == 2 && logits.size(0) >= splits && splits > 0, "Inception Score: need at least ", splits,
        " rows of logits, got ", logits.sizes());
  auto logp = torch::log_softmax(logits.to(torch::kFloat64), 1);
  const int64_t n = logits.size(0);
  std::vector<double> scores;
  for (int64_t k = 0; k < splits; ++k) {
    const int64_t b = k * n / splits, e = (k + 1) * n / splits;
    auto part = logp.narrow(0, b, e - b);
    auto log_py = torch::logsumexp(part, 0) - std::log(static_cast<double>(e - b));  // log mean p(y|x)
    auto kl = (part.exp() * (part - log_py.unsqueeze(0))).sum(1).mean();
    scores.push_back(std::exp(kl.item<double>()));
  }
  auto t = torch::tensor(scores, torch::kFloat64);
  return {t.mean().item<double>(), splits > 1 ? t.std(/*unbiased=*/false).item<double>() : 0.0};
}

bool npz_has_stats(const std::string& path) {
  if (!has_suffix(path, ".npz")) return false;
  // Member names only: an image .npz can be gigabytes.
  io::ZipReader zip(path);
  return zip.has("mu.npy") && zip.has("sigma.npy");
}

FeatureStats read_stats(const std::string& path) {
  FeatureStats s;
  for (auto& [k, t] : io::read_npz(path)) {
    if (k == "mu") s.mu = t.to(torch::kFloat64);
    if (k == "sigma") s.sigma = t.to(torch::kFloat64);
    if (k == "count") s.count = t.item<int64_t>();
  }
  check(s.mu.defined() && s.sigma.defined(), path, ": expected arrays 'mu' and 'sigma'");
  check(s.mu.dim() == 1 && s.sigma.dim() == 2 && s.sigma.size(0) == s.mu.size(0) && s.sigma.size(1) == s.mu.size(0),
        path, ": 'mu' must be [D] and 'sigma' [D,D], got ", s.mu.sizes(), " and ", s.sigma.sizes());
  return s;
}

void write_stats(const std::string& path, const FeatureStats& s) {
  io::write_npz(path, {{"mu", s.mu}, {"sigma", s.sigma}, {"count", torch::tensor(s.count, torch::kInt64)}});
}

}  // namespace rar::eval
