// fid.h — Fréchet Inception Distance and Inception Score.
//   FID = |μ1 − μ2|² + tr(Σ1) + tr(Σ2) − 2·tr((Σ1 Σ2)^½)
// with tr((Σ1Σ2)^½) computed stably as Σ √λ_i of the symmetric PSD matrix Σ1^½ Σ2 Σ1^½ (similar to
// Σ1Σ2), in float64, eigenvalues clamped at 0 — no complex square roots, no ε fudge.
//   IS = exp(E_x KL(p(y|x) ‖ p(y))), over `splits` equal parts: mean and standard deviation.
#pragma once
#include <string>
#include <utility>

#include <torch/types.h>

namespace rar::eval {

struct FeatureStats {
  torch::Tensor mu, sigma;  // float64 [D], [D,D] (unbiased covariance, as numpy.cov)
  int64_t count = 0;
};

FeatureStats feature_stats(const torch::Tensor& features /*[N,D]*/);
double frechet_distance(const FeatureStats& a, const FeatureStats& b);
// How much an FID of `features` (the samples' side) against fixed reference statistics moves with
// the draw of the samples: the standard deviation of the FIDs of `n` bootstrap resamples of the
// rows (with replacement; seeded, so repeatable). Resamples repeat rows, so their FIDs sit a little
// above the plain one; the spread is what two sample sets of this size would differ by.
double frechet_bootstrap_sd(const torch::Tensor& features, const FeatureStats& ref, int64_t n, uint64_t seed = 0);
// logits [N,K] -> (mean, std) of the Inception Score over `splits` parts.
std::pair<double, double> inception_score(const torch::Tensor& logits, int64_t splits = 10);

// Reads stats saved by write_stats or an ADM reference batch (`mu`, `sigma` in an .npz).
bool npz_has_stats(const std::string& path);
FeatureStats read_stats(const std::string& path);
void write_stats(const std::string& path, const FeatureStats& s);

}  // namespace rar::eval
