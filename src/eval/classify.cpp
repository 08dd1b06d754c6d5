// classify.cpp — see classify.h.
#include "eval/classify.h"

#include <torch/torch.h>

#include "util/error.h"
#include "util/progress.h"

namespace rar::eval {

ClassifierOutputs classify_images(model::Classifier& c, const data::ImageBatches& images, int64_t n, int64_t batch,
                                  const torch::Device& device) {
  torch::NoGradGuard ng;
  c->eval();
  if (n <= 0 || n > images.size()) n = images.size();
  std::vector<torch::Tensor> feats, preds;
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; i += batch) {
    const int64_t m = std::min(batch, n - i);
    auto x = images.range(i, m).to(device).to(torch::kFloat32).div_(255.0);
    auto f = c->features(x);
    feats.push_back(f.cpu());
    preds.push_back(c->logits(f).argmax(1).cpu());
    for (int64_t j = 0; j < m; ++j) labels[i + j] = images.label(i + j);
  }
  ClassifierOutputs o;
  o.features = torch::cat(feats);
  o.predictions = torch::cat(preds);
  o.labels = torch::tensor(labels, torch::kInt64);
  return o;
}

double accuracy(const ClassifierOutputs& o) {
  check(o.labels.numel() > 0, "accuracy of no images");
  return o.predictions.eq(o.labels).to(torch::kFloat64).mean().item<double>();
}

}  // namespace rar::eval
