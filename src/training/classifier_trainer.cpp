// classifier_trainer.cpp — see classifier_trainer.h.
#include "training/classifier_trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>

#include "data/epoch_sampler.h"
#include "data/prepare.h"
#include "data/sources.h"
#include "eval/classify.h"
#include "model/classifier.h"
#include "training/adamw.h"
#include "training/optim_config.h"
#include "training/schedule.h"
#include "util/device.h"
#include "util/error.h"
#include "util/progress.h"

namespace rar::training {

double train_classifier(const ClassifierTrainOptions& o) {
  auto device = parse_device(o.device);
  parse_precision("tf32");
  auto train_src = data::open_source(o.data);
  const int64_t channels = data::prepare(train_src->image(0), o.size, train_src->image(0).size(2), o.pad).size(2);
  data::ImageBatches train(*train_src, o.size, channels, o.pad, int64_t(4) << 30, "load train");
  const std::string test_spec = data::resolve_test_split(o.test, o.data);

  model::ClassifierConfig cc;
  cc.channels = channels;
  cc.classes = train_src->num_classes();
  if (cc.classes < 2) {  // unnamed classes: count the labels
    int64_t mx = 0;
    for (int64_t i = 0; i < train_src->size(); ++i) mx = std::max(mx, train_src->label(i));
    cc.classes = mx + 1;
  }
  check(cc.classes >= 2, o.data, ": a classifier needs at least 2 classes");
  cc.width = o.width;
  cc.image_size = train.shape()[1];
  torch::manual_seed(o.seed);
  model::Classifier net(cc);
  net->to(device);
  net->train();
  AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  ao.fused = true;
  AdamW opt(named_parameters(*net), ao);
  LrSchedule lr;
  lr.base_lr = o.lr;
  lr.end_lr = o.lr * 0.01;
  lr.warmup_steps = std::min<int64_t>(100, o.steps / 10);
  lr.total_steps = o.steps;
  data::EpochSampler sampler(train.size(), o.batch, o.seed);
  std::fprintf(stderr, "classifier: %lld classes, %lldx%lld x%lld images, width %lld, %lld train images\n",
               (long long)cc.classes, (long long)cc.image_size, (long long)train.shape()[2], (long long)channels,
               (long long)cc.width, (long long)train.size());
  Progress p("train-classifier", o.steps, "step");
  double acc_loss = 0;
  int64_t acc_n = 0;
  for (int64_t step = 0; step < o.steps; ++step) {
    auto idx = sampler.next();
    auto x = train.get(idx).to(device).to(torch::kFloat32).div_(255.0);
    std::vector<int64_t> labels(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) labels[i] = train.label(idx[i]);
    auto y = torch::tensor(labels, torch::kInt64).to(device);
    if (o.flip) {
      auto g = at::make_generator<at::CPUGeneratorImpl>(o.seed * 7919 + static_cast<uint64_t>(step));
      auto m = torch::rand({x.size(0)}, g).lt(0.5).to(device).view({-1, 1, 1, 1});
      x = torch::where(m, x.flip({3}), x);
    }
    auto loss = torch::nn::functional::cross_entropy(net->logits(net->features(x)), y);
    opt.zero_grad();
    loss.backward();
    opt.step(lr.at(step));
    acc_loss += loss.item<double>();
    ++acc_n;
    if ((step + 1) % o.log_every == 0 || step + 1 == o.steps) {
      char extra[64];
      std::snprintf(extra, sizeof extra, "loss %.4f", acc_loss / acc_n);
      p.update(step + 1, extra);
      acc_loss = 0;
      acc_n = 0;
    }
  }
  p.finish();
  model::save_classifier(o.out, net);
  double acc = -1;
  if (!test_spec.empty()) {
    auto test_src = data::open_source(test_spec);
    data::ImageBatches test(*test_src, o.size, channels, o.pad, int64_t(4) << 30, "load test");
    acc = eval::accuracy(eval::classify_images(net, test, 0, 256, device));
    std::printf("test accuracy %.2f%% (%lld images)\n", 100 * acc, (long long)test.size());
  }
  std::fprintf(stderr, "classifier: %s\n", o.out.c_str());
  return acc;
}

}  // namespace rar::training
