// classifier.cpp — see classifier.h.
#include "model/classifier.h"

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "util/error.h"

namespace rar::model {

nlohmann::json ClassifierConfig::to_json() const {
  return {{"channels", channels}, {"classes", classes}, {"width", width}, {"image_size", image_size}, {"dropout", dropout}};
}

ClassifierConfig ClassifierConfig::from_json(const nlohmann::json& j) {
  ClassifierConfig c;
  try {
    c.channels = j.at("channels").get<int64_t>();
    c.classes = j.at("classes").get<int64_t>();
    c.width = j.at("width").get<int64_t>();
    c.image_size = j.at("image_size").get<int64_t>();
    c.dropout = j.value("dropout", c.dropout);
  } catch (const nlohmann::json::exception& e) {
    fail("classifier config: ", e.what());
  }
  return c;
}

ClassifierImpl::ClassifierImpl(const ClassifierConfig& c) : cfg(c) {
  check(c.channels > 0 && c.classes > 1 && c.width > 0, "classifier config: bad sizes");
  body = torch::nn::Sequential();
  int64_t in = c.channels;
  for (int64_t stage = 0; stage < 3; ++stage) {
    const int64_t out = c.width << stage;
    for (int k = 0; k < 2; ++k, in = out) {
      body->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false)));
      body->push_back(torch::nn::BatchNorm2d(out));
      body->push_back(torch::nn::ReLU());
    }
    body->push_back(torch::nn::MaxPool2d(2));
  }
  register_module("body", body);
  drop = register_module("drop", torch::nn::Dropout(c.dropout));
  head = register_module("head", torch::nn::Linear(in, c.classes));
}

torch::Tensor ClassifierImpl::features(const torch::Tensor& images) {
  check(images.dim() == 4 && images.size(1) == cfg.channels, "classifier: images must be [B,", cfg.channels,
        ",H,W], got ", images.sizes());
  return body->forward(images * 2 - 1).mean({2, 3});
}

torch::Tensor ClassifierImpl::logits(const torch::Tensor& f) { return head(drop(f)); }

LoadedClassifier load_classifier(const std::string& path, const torch::Device& device) {
  auto sd = io::read_checkpoint(path);
  auto meta = metadata_json(sd, kClassifierConfigKey);
  check(meta.has_value(), path, ": not a classifier written by `rar train-classifier` (no ", kClassifierConfigKey,
        " metadata)");
  LoadedClassifier c;
  c.cfg = ClassifierConfig::from_json(*meta);
  c.model = Classifier(c.cfg);
  load_into(*c.model, sd, device, torch::kFloat32);
  return c;
}

void save_classifier(const std::string& path, Classifier& model) {
  auto sd = state_dict_of(*model);
  sd.metadata[kClassifierConfigKey] = model->cfg.to_json().dump();
  sd.metadata["format"] = "pt";
  io::write_safetensors(path, sd);
}

}  // namespace rar::model
