// `rar eval fid | is | stats` — sample quality with the FID Inception network (eval/inception.h):
// either side of FID may be images (.npz ADM batch, .npy, folder, ...) or saved statistics
// (`mu`/`sigma` .npz, e.g. VIRTUAL_imagenet256_labeled.npz).
#include <cstdio>

#include "cli/commands.h"
#include "data/prepare.h"
#include "data/sources.h"
#include "eval/fid.h"
#include "eval/inception.h"
#include "util/device.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::cli {
namespace {

struct EvalArgs {
  std::string samples, ref, inception, out, device = "auto";
  int64_t batch = 50, splits = 10, max_images = 0;
};

std::string inception_path(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("RAR_INCEPTION"); env && *env) return env;
  fail("the FID Inception weights are needed: pass --inception pt_inception-2015-12-05-6726825d.pth (pytorch-fid's "
       "release file) or set RAR_INCEPTION");
}

// pool3 features [N,2048] and logits [N,1008] of the images of `spec`.
std::pair<torch::Tensor, torch::Tensor> features_of(eval::FidInception& net, const std::string& spec,
                                                    const EvalArgs& a, const torch::Device& device) {
  torch::NoGradGuard ng;
  auto src = data::open_source(spec);
  int64_t n = src->size();
  if (a.max_images > 0) n = std::min(n, a.max_images);
  check(n >= 2, spec, ": need at least 2 images, found ", n);
  std::vector<torch::Tensor> feats, logits;
  Progress p("inception", n, "img");
  for (int64_t i = 0; i < n; i += a.batch) {
    const int64_t m = std::min(a.batch, n - i);
    auto x = data::to_input(data::load_range(*src, i, m, 0, 3, 0), device);
    auto f = net->pool3(x);
    feats.push_back(f.cpu());
    logits.push_back(net->logits(f).cpu());
    p.update(i + m);
  }
  p.finish();
  return {torch::cat(feats), torch::cat(logits)};
}

eval::FeatureStats stats_of(eval::FidInception* net, const std::string& spec, const EvalArgs& a,
                            const torch::Device& device) {
  if (eval::npz_has_stats(spec)) return eval::read_stats(spec);
  check(net != nullptr, "internal: no network");
  return eval::feature_stats(features_of(*net, spec, a, device).first);
}

}  // namespace

void add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* ev = app.add_subcommand("eval", "Sample quality: FID, Inception Score, feature statistics");
  ev->require_subcommand(1);
  auto common = [&](CLI::App* c) {
    c->add_option("--inception", a->inception, "FID Inception weights (pt_inception-2015-12-05-6726825d.pth); env RAR_INCEPTION");
    c->add_option("--device", a->device, "auto, cpu, cuda or cuda:N");
    c->add_option("--batch", a->batch, "images per batch")->check(positive_count());
    c->add_option("--max-images", a->max_images, "use at most this many images per side (0 = all)")->check(count());
  };
  auto* fid = ev->add_subcommand("fid", "Frechet Inception Distance between two image sets or statistics");
  common(fid);
  fid->add_option("--samples", a->samples, "images (.npz arr_0, .npy, folder, ...) or stats .npz (mu, sigma)")->required();
  fid->add_option("--ref", a->ref, "reference images or stats (e.g. VIRTUAL_imagenet256_labeled.npz)")->required();
  fid->callback([a] {
    const bool need_net = !eval::npz_has_stats(a->samples) || !eval::npz_has_stats(a->ref);
    auto device = parse_device(a->device);
    parse_precision("fp32");
    std::unique_ptr<eval::FidInception> net;
    if (need_net) net = std::make_unique<eval::FidInception>(eval::load_fid_inception(inception_path(a->inception), device));
    auto s = stats_of(net.get(), a->samples, *a, device);
    auto r = stats_of(net.get(), a->ref, *a, device);
    std::printf("FID %.4f (%lld samples vs %lld reference)\n", eval::frechet_distance(s, r), (long long)s.count,
                (long long)r.count);
  });
  auto* is = ev->add_subcommand("is", "Inception Score (mean and std over splits)");
  common(is);
  is->add_option("--samples", a->samples, "images")->required();
  is->add_option("--splits", a->splits, "splits")->check(positive_count());
  is->callback([a] {
    auto device = parse_device(a->device);
    parse_precision("fp32");
    auto net = eval::load_fid_inception(inception_path(a->inception), device);
    auto [m, sd] = eval::inception_score(features_of(net, a->samples, *a, device).second, a->splits);
    std::printf("IS %.3f +- %.3f (%lld splits)\n", m, sd, (long long)a->splits);
  });
  auto* st = ev->add_subcommand("stats", "Save Inception feature statistics (mu, sigma) of images to .npz");
  common(st);
  st->add_option("--samples", a->samples, "images")->required();
  st->add_option("--out", a->out, "stats .npz")->required();
  st->callback([a] {
    auto device = parse_device(a->device);
    parse_precision("fp32");
    auto net = eval::load_fid_inception(inception_path(a->inception), device);
    eval::write_stats(a->out, eval::feature_stats(features_of(net, a->samples, *a, device).first));
    std::fprintf(stderr, "wrote %s\n", a->out.c_str());
  });
}

}  // namespace rar::cli
