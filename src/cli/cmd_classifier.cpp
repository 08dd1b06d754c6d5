// `rar train-classifier` and `rar eval classify` — a small CNN for datasets without Inception
// weights, and sample quality measured with it: class accuracy and feature-FID against real images.
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "data/prepare.h"
#include "data/sources.h"
#include "eval/classify.h"
#include "eval/nearest.h"
#include "eval/fid.h"
#include "model/classifier.h"
#include "training/classifier_trainer.h"
#include "util/device.h"
#include "util/error.h"

namespace rar::cli {

void add_classifier_commands(CLI::App& app) {
  auto o = std::make_shared<training::ClassifierTrainOptions>();
  auto* t = app.add_subcommand("train-classifier", "Train a small CNN classifier (for accuracy and feature-FID of samples)");
  t->add_option("--data", o->data, "training images with labels (ImageFolder, fashion-mnist, .npz, ...)")->required();
  t->add_option("--test", o->test, "held-out images for the accuracy (auto: the :test split; none)");
  t->add_option("--out", o->out, "classifier .safetensors");
  t->add_option("--size", o->size, "ADM center crop size (0 = as is)")->check(count());
  t->add_option("--pad", o->pad, "zero-pad to this square size (32 for Fashion-MNIST, as the tokenizer sees it)")->check(count());
  t->add_option("--steps", o->steps, "optimizer steps")->check(positive_count());
  t->add_option("--batch", o->batch, "batch size")->check(positive_count());
  t->add_option("--width", o->width, "channels of the first stage (then x2, x4)")->check(positive_count());
  t->add_option("--lr", o->lr, "peak learning rate")->check(positive());
  t->add_option("--device", o->device, "auto, cpu, cuda or cuda:N");
  t->add_option("--seed", o->seed, "seed")->check(count());
  t->callback([o] { training::train_classifier(*o); });

  struct EvalArgs {
    std::string classifier, samples, ref, train, device = "auto";
    int64_t pad = 0, size = 0, batch = 256, max_images = 0, bootstrap = 0;
  };
  auto a = std::make_shared<EvalArgs>();
  auto* ev = app.get_subcommand("eval");
  auto* c = ev->add_subcommand("classify", "Share of samples classified as their class; feature-FID vs real images");
  c->add_option("--classifier", a->classifier, "from rar train-classifier")->required();
  c->add_option("--samples", a->samples, "labelled samples (.npz arr_0 + arr_1 from rar sample, or any source)")->required();
  c->add_option("--ref", a->ref, "real images for the feature-FID (e.g. fashion-mnist:test)");
  c->add_option("--train", a->train,
                "training images (e.g. fashion-mnist:train): also report how near the samples lie to their nearest "
                "training image, against the --ref images (a memorisation check)");
  c->add_option("--bootstrap", a->bootstrap,
                "also report how much the scores move with the draw of the samples: the feature-FID's sd over N "
                "bootstrap resamples (e.g. 100), the accuracy's binomial sd")
      ->check(count());
  c->add_option("--pad", a->pad, "zero-pad images to this square size (both sides->check(count()); 32 for Fashion-MNIST)");
  c->add_option("--size", a->size, "ADM center crop size (both sides)")->check(count());
  c->add_option("--max-images", a->max_images, "use at most this many images per side (0 = all)")->check(count());
  c->add_option("--device", a->device, "auto, cpu, cuda or cuda:N");
  c->callback([a] {
    auto device = parse_device(a->device);
    auto cl = model::load_classifier(a->classifier, device);
    auto src = data::open_source(a->samples);
    data::ImageBatches samples(*src, a->size, cl.cfg.channels, a->pad, int64_t(4) << 30, "load samples");
    auto so = eval::classify_images(cl.model, samples, a->max_images, a->batch, device);
    std::printf("accuracy %.2f%% (%lld samples classified as their label)\n", 100 * eval::accuracy(so),
                (long long)so.labels.size(0));
    if (!a->ref.empty()) {
      auto rsrc = data::open_source(a->ref);
      data::ImageBatches ref(*rsrc, a->size, cl.cfg.channels, a->pad, int64_t(4) << 30, "load reference");
      auto ro = eval::classify_images(cl.model, ref, a->max_images, a->batch, device);
      const auto ref_stats = eval::feature_stats(ro.features);
      const double fid = eval::frechet_distance(eval::feature_stats(so.features), ref_stats);
      std::printf("feature-FID %.4f (%lld samples vs %lld reference images; reference accuracy %.2f%%)\n", fid,
                  (long long)so.labels.size(0), (long long)ro.labels.size(0), 100 * eval::accuracy(ro));
      if (a->bootstrap > 0) {
        const double p = eval::accuracy(so), n = static_cast<double>(so.labels.size(0));
        std::printf("spread: feature-FID sd %.4f (%lld bootstrap resamples of the samples), accuracy sd %.2f%% "
                    "(binomial)\n",
                    eval::frechet_bootstrap_sd(so.features, ref_stats, a->bootstrap),
                    (long long)a->bootstrap, 100 * std::sqrt(p * (1 - p) / n));
      }
      if (!a->train.empty()) {
        auto tsrc = data::open_source(a->train);
        data::ImageBatches train(*tsrc, a->size, cl.cfg.channels, a->pad, int64_t(4) << 30, "load training images");
        const auto base = eval::pixel_rows(train, 0);
        const auto r = eval::copy_report(eval::nearest_distances(eval::pixel_rows(samples, a->max_images), base, device),
                                         eval::nearest_distances(eval::pixel_rows(ref, a->max_images), base, device));
        std::printf("nearest training image (pixel L2, [0,1] scale, %lld training images): median %.4f for samples, "
                    "%.4f for reference images; %.2f%% of samples nearer than 99%% of reference images are (%.4f)\n",
                    (long long)base.size(0), r.sample_median, r.heldout_median, 100 * r.copies, r.threshold);
      }
    } else {
      check(a->train.empty(), "--train needs --ref (held-out real images to compare the distances with)");
      check(a->bootstrap == 0, "--bootstrap needs --ref (the feature-FID's reference images)");
    }
  });
}

}  // namespace rar::cli
