// classifier.h — a small CNN image classifier for datasets without Inception weights (Fashion-
// MNIST, your own data): it scores samples by whether they are recognised as their conditioning
// class, and its penultimate features give a dataset-specific FID (eval/classify.h).
//   3 stages of [conv3x3-BN-ReLU, conv3x3-BN-ReLU, 2x2 max pool] with width, 2·width, 4·width
//   channels, global average pool -> features [B, 4·width] -> dropout -> linear -> logits [B, classes].
#pragma once
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace rar::model {

struct ClassifierConfig {
  int64_t channels = 1, classes = 10, width = 32, image_size = 32;
  double dropout = 0.2;
  nlohmann::json to_json() const;
  static ClassifierConfig from_json(const nlohmann::json& j);
};

struct ClassifierImpl : torch::nn::Module {
  explicit ClassifierImpl(const ClassifierConfig& c);
  torch::Tensor features(const torch::Tensor& images);  // float [B,C,H,W] in [0,1] -> [B, 4·width]
  torch::Tensor logits(const torch::Tensor& features);
  ClassifierConfig cfg;
  torch::nn::Sequential body{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(Classifier);

constexpr const char* kClassifierConfigKey = "rar.classifier_config";
struct LoadedClassifier {
  ClassifierConfig cfg;
  Classifier model{nullptr};
};
LoadedClassifier load_classifier(const std::string& path, const torch::Device& device);
void save_classifier(const std::string& path, Classifier& model);

}  // namespace rar::model
