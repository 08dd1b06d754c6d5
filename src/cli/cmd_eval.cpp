// `rar eval adm | fid | is | stats` — sample quality with the FID Inception network
// (eval/inception.h). `adm`: guided-diffusion's evaluator, its five numbers (eval/adm.h), from
// ADM-layout .npz batches (arr_0 uint8 [N,H,W,3], streamed) or activation files (pool, spatial).
// `fid`, `is`, `stats`: pytorch-fid's preprocessing; either side of FID may be images (.npz ADM
// batch, .npy, folder, ...) or saved statistics (`mu`/`sigma` .npz).
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/prepare.h"
#include "data/sources.h"
#include "eval/adm.h"
#include "eval/fid.h"
#include "io/npy.h"
#include "io/zip.h"
#include "util/atomic_file.h"
#include "eval/inception.h"
#include "util/device.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::cli {
namespace {

struct EvalArgs {
  std::string samples, ref, inception, out, device = "auto", cache, json;
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

// ---------------------------------------------------------------- rar eval adm

// One side of the evaluation: its activations, and — for a reference batch that holds them — the
// statistics it brings (the evaluator uses those for FID and sFID).
struct AdmSide {
  eval::AdmActivations acts;
  std::optional<eval::FeatureStats> stats, stats_s;
};

bool npz_member(const std::string& path, const std::string& name) {
  if (!has_suffix(path, ".npz")) return false;
  return io::ZipReader(path).has(name + ".npy");
}

eval::FeatureStats stats_from(const std::string& path, const char* mu, const char* sigma) {
  eval::FeatureStats s;
  for (auto& [k, t] : io::read_npz(path)) {
    if (k == mu) s.mu = t.to(torch::kFloat64);
    if (k == sigma) s.sigma = t.to(torch::kFloat64);
  }
  check(s.mu.dim() == 1 && s.sigma.dim() == 2 && s.sigma.size(0) == s.mu.size(0) && s.sigma.size(1) == s.mu.size(0),
        path, ": '", mu, "' must be [D] and '", sigma, "' [D,D]");
  return s;
}

eval::AdmActivations read_activations(const std::string& path) {
  eval::AdmActivations a;
  for (auto& [k, t] : io::read_npz(path)) {
    if (k == "pool") a.pool = t.to(torch::kFloat32);
    if (k == "spatial") a.spatial = t.to(torch::kFloat32);
  }
  check(a.pool.defined() && a.spatial.defined() && a.pool.dim() == 2 && a.spatial.dim() == 2 &&
            a.pool.size(0) == a.spatial.size(0) && a.pool.size(0) >= 2,
        path, ": expected activations 'pool' [N,2048] and 'spatial' [N,2023] of N >= 2 rows");
  return a;
}

// Images arr_0 [N,H,W,3] uint8 streamed through the network in batches (memory: one batch).
eval::AdmActivations activations_of_images(eval::FidInception& net, const std::string& path, int64_t batch,
                                           int64_t max_images) {
  io::NpzRowStream in(path, "arr_0");
  const auto& shape = in.shape();
  check(shape.size() == 4 && shape[3] == 3 && in.dtype() == torch::kUInt8, path,
        ": arr_0 must be uint8 images [N,H,W,3] (the ADM layout), got ", c10::IntArrayRef(shape), " ",
        c10::toString(in.dtype()));
  int64_t n = in.rows();
  if (max_images > 0) n = std::min(n, max_images);
  check(n >= 2, path, ": need at least 2 images, found ", n);
  std::vector<torch::Tensor> pool, spatial;
  Progress p("inception", n, "img");
  for (int64_t done = 0; done < n;) {
    auto imgs = in.next(std::min(batch, n - done));
    auto acts = eval::adm_activations(net, imgs);
    pool.push_back(acts.pool);
    spatial.push_back(acts.spatial);
    done += imgs.size(0);
    p.update(done);
  }
  p.finish();
  return {torch::cat(pool), torch::cat(spatial)};
}

void run_adm(const EvalArgs& a) {
  auto device = parse_device(a.device);
  parse_precision("fp32");
  std::unique_ptr<eval::FidInception> net;
  auto network = [&]() -> eval::FidInception& {
    if (!net) net = std::make_unique<eval::FidInception>(eval::load_fid_inception(inception_path(a.inception), device));
    return *net;
  };
  auto side = [&](const std::string& path, const std::string& cache) {
    AdmSide s;
    if (!cache.empty() && path_exists(cache)) {
      s.acts = read_activations(cache);
    } else if (npz_member(path, "pool") && npz_member(path, "spatial")) {
      s.acts = read_activations(path);
    } else {
      check(npz_member(path, "arr_0"), path, ": expected an ADM batch (.npz with arr_0 images) or activations (pool, spatial)");
      s.acts = activations_of_images(network(), path, a.batch, a.max_images);
      if (!cache.empty())
        io::write_npz(cache, {{"pool", s.acts.pool}, {"spatial", s.acts.spatial}});
    }
    if (npz_member(path, "mu") && npz_member(path, "sigma")) s.stats = stats_from(path, "mu", "sigma");
    if (npz_member(path, "mu_s") && npz_member(path, "sigma_s")) s.stats_s = stats_from(path, "mu_s", "sigma_s");
    return s;
  };
  const AdmSide ref = side(a.ref, a.cache), smp = side(a.samples, "");
  // FID and sFID: the samples' statistics against the reference's (its stored ones when it has them)
  const double fid = eval::frechet_distance(eval::feature_stats(smp.acts.pool),
                                            ref.stats ? *ref.stats : eval::feature_stats(ref.acts.pool));
  const double sfid = eval::frechet_distance(eval::feature_stats(smp.acts.spatial),
                                             ref.stats_s ? *ref.stats_s : eval::feature_stats(ref.acts.spatial));
  const auto [precision, recall] = eval::adm_precision_recall(ref.acts.pool, smp.acts.pool, 3, device);
  // IS needs the softmax weight (the Inception weights file); activations alone give the other four
  std::optional<double> is;
  const bool have_weights = !a.inception.empty() || (std::getenv("RAR_INCEPTION") && *std::getenv("RAR_INCEPTION"));
  if (net || have_weights) {
    torch::NoGradGuard ng;
    is = eval::adm_inception_score(smp.acts.pool, network()->fc->weight.detach().cpu().t().contiguous());
  }
  std::printf("%lld samples against %lld reference images\n", (long long)smp.acts.pool.size(0),
              (long long)ref.acts.pool.size(0));
  if (is) std::printf("Inception Score: %.4f\n", *is);
  else std::printf("Inception Score: needs the Inception weights (--inception or RAR_INCEPTION)\n");
  std::printf("FID: %.4f\nsFID: %.4f\nPrecision: %.4f\nRecall: %.4f\n", fid, sfid, precision, recall);
  if (!a.json.empty()) {
    nlohmann::json j = {{"fid", fid}, {"sfid", sfid}, {"precision", precision}, {"recall", recall},
                        {"inception_score", is ? nlohmann::json(*is) : nlohmann::json(nullptr)},
                        {"samples", a.samples}, {"reference", a.ref}, {"sample_count", smp.acts.pool.size(0)},
                        {"reference_count", ref.acts.pool.size(0)}};
    write_file_atomic(a.json, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  }
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
  auto* adm = ev->add_subcommand("adm", "guided-diffusion's evaluator: Inception Score, FID, sFID, Precision, Recall");
  common(adm);
  adm->add_option("reference", a->ref, "reference batch (e.g. VIRTUAL_imagenet256_labeled.npz) or its activations")->required();
  adm->add_option("samples", a->samples, "samples: an ADM-layout .npz (rar sample --out x.npz) or activations")->required();
  adm->add_option("--cache", a->cache, "the reference's activations: read from this .npz when it exists, else written to it");
  adm->add_option("--json", a->json, "also write the five numbers to this JSON file");
  adm->callback([a] { run_adm(*a); });
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
