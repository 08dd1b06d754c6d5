// `rar sample` — class-conditional generation (DESIGN §5) to token ids, a PNG grid, one PNG per
// sample, or an ADM-layout .npz written in resumable shards.
#include <cstdio>
#include <optional>
#include <sstream>

#include "cli/commands.h"
#include "cli/run_options.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/plot.h"
#include "io/sample_shards.h"
#include "model/vqgan.h"
#include "model/weights.h"
#include "sampling/sample_job.h"
#include "training/distributed.h"
#include "util/device.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::cli {
namespace {

struct SampleArgs {
  std::string generator, tokenizer, classes, out, tokens_out;
  GenerationFlags gen;  // device, precision, decode_precision
  std::string schedule = "pow-cosine";
  bool all_classes = false, channels_last = false, compress = false;
  int64_t per_class = 1, batch = 64, max_batches = 0, decode_batch = 64;
  std::string class_names;
  sampling::SamplingOptions opts;
  bool cfg_given = false, power_given = false, temperature_given = false;  // else the generator's own settings
};

// The generator's own sampling settings (published, or its training config's) where no flag says
// otherwise; one line says which.
void apply_sampling_defaults(const std::optional<model::SamplingDefaults>& d, bool cfg_given, bool power_given,
                             bool temperature_given, sampling::SamplingOptions& o, bool announce) {
  if (!d || (cfg_given && power_given && temperature_given)) return;
  if (!cfg_given) o.cfg = d->cfg;
  if (!power_given) o.cfg_power = d->cfg_power;
  if (!temperature_given) o.temperature = d->temperature;
  if (announce)
    std::fprintf(stderr, "sampling with %s settings: --cfg %g --cfg-power %g --temperature %g (flags override)\n",
                 d->source.c_str(), o.cfg, o.cfg_power, o.temperature);
}

std::vector<int64_t> parse_class_ids(const std::string& s) {
  std::vector<int64_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      ids.push_back(std::stoll(item, &used));
      check(used == item.size(), "");
    } catch (...) {
      fail("--classes: '", item, "' is not a class id (expected e.g. 1,2,3)");
    }
  }
  return ids;
}

enum class OutKind { None, Grid, Dir, Npz };

OutKind out_kind(const std::string& out) {
  auto ends = [&](const char* suf) { return has_suffix(out, suf); };
  if (out.empty()) return OutKind::None;
  if (ends(".png")) return OutKind::Grid;
  if (ends(".npz")) return OutKind::Npz;
  if (ends("/") || is_directory(out)) return OutKind::Dir;
  fail("--out ", out, ": expected a .png grid, a directory (ending in /) or an .npz file");
}

// Fails early, before any sampling, if an output location cannot be written.
void check_writable(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty()) dir = "/";
  check(is_directory(dir), path, ": cannot open for writing (no directory ", dir, ")");
  check(!is_directory(path), path, ": is a folder; expected the path of a file to write");
}

void run(SampleArgs& a) {
  torch::Device device = parse_device(a.gen.device);
  a.gen.precision = resolve_precision(a.gen.precision, device);
  auto dtype = parse_precision(a.gen.precision);
  a.opts.schedule = sampling::parse_guidance_schedule(a.schedule);
  a.opts.validate();
  const OutKind kind = out_kind(a.out);
  check(kind == OutKind::None || !a.tokenizer.empty(), "--out ", a.out, " needs --tokenizer to decode images");
  check(kind != OutKind::None || !a.tokens_out.empty(), "nothing to write: give --out and/or --tokens-out");
  check(a.max_batches >= 0 && (a.max_batches == 0 || kind == OutKind::Npz), "--max-batches needs an .npz --out");
  if (!a.tokens_out.empty()) check_writable(a.tokens_out);
  if (kind == OutKind::Grid || kind == OutKind::Npz) check_writable(a.out);
  if (kind == OutKind::Dir) make_dirs(a.out);
  // Several processes (torchrun, or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT): batch b is rank
  // b % world's, written into the shared .npz parts folder; rank 0 assembles the .npz. Batch b
  // uses seed + b whoever runs it, so the result equals a one-process run's.
  const auto env = training::dist_env_from_environment();
  if (env.world > 1) {
    check(kind == OutKind::Npz, "a run over ", env.world, " processes writes an .npz --out (got '", a.out, "')");
    check(a.tokens_out.empty(), "--tokens-out is not available over several processes (the .npz shards keep the tokens)");
  }
  device = training::rank_device(device, env);
  std::unique_ptr<training::DataParallel> dp;
  if (env.world > 1) dp = std::make_unique<training::DataParallel>(env, device);
  const int64_t rank = dp ? dp->rank() : 0, world = dp ? dp->world() : 1;

  auto g = model::load_generator(a.generator, device, dtype);
  apply_sampling_defaults(g.sampling, a.cfg_given, a.power_given, a.temperature_given, a.opts, rank == 0);
  a.opts.validate();
  auto classes = sampling::class_list(a.classes.empty() ? std::vector<int64_t>{} : parse_class_ids(a.classes),
                                      a.all_classes, a.per_class, g.cfg.classes);
  model::LoadedVQ vq;
  if (!a.tokenizer.empty()) {
    // auto: bf16 on a GPU (faster: bench/RESULTS.md, "MaskGIT-VQGAN decoding"), fp32 (the reference's
    // decoding) on the CPU — as rar serve, so that both give the same images out of the box
    a.gen.decode_precision = resolve_decode_precision(a.gen.decode_precision, device);
    vq = model::load_vq(a.tokenizer, device, a.gen.decode_precision == "bf16" ? torch::kBFloat16 : torch::kFloat32);
    vq.model->use_channels_last(a.channels_last);
    check(vq.cfg.codebook_size == g.cfg.codebook, "tokenizer codebook (", vq.cfg.codebook_size,
          " codes) does not match the generator's vocabulary (", g.cfg.codebook, ")");
  }
  const int64_t N = classes.size(0);
  std::unique_ptr<io::SampleShards> shards;
  if (kind == OutKind::Npz) {
    nlohmann::json settings = {{"generator", a.generator}, {"tokenizer", a.tokenizer}, {"classes", a.classes},
                               {"all_classes", a.all_classes}, {"per_class", a.per_class}, {"cfg", a.opts.cfg},
                               {"cfg_power", a.opts.cfg_power}, {"schedule", a.schedule},
                               {"temperature", a.opts.temperature}, {"top_k", a.opts.top_k},
                               {"top_p", a.opts.top_p}, {"order", a.opts.order}, {"seed", a.opts.seed},
                               {"precision", a.gen.precision}, {"device", device.is_cuda() ? "cuda" : "cpu"},
                               // everything else that changes the bytes of a shard
                               {"engine", a.opts.engine}, {"kv_cache", a.opts.kv_cache}, {"speculative", a.opts.speculative},
                               {"decode_precision", a.gen.decode_precision}, {"channels_last", a.channels_last},
                               {"decode_batch", a.decode_batch}};
    // the split attention kernel sums in another order (only named when chosen: the manifests of
    // runs before the choice existed hold the default)
    if (a.opts.attention_kernel != "auto") settings["attention_kernel"] = a.opts.attention_kernel;
    // rank 0 creates the parts folder and its manifest; the others then check theirs against it
    if (dp && rank != 0) dp->barrier();
    shards = std::make_unique<io::SampleShards>(a.out, N, a.batch, settings, /*own=*/rank == 0);
    if (dp && rank == 0) dp->barrier();
  }

  sampling::SampleRun run{classes, a.batch, a.decode_batch, a.max_batches, a.opts, shards.get(), rank, world};
  std::vector<torch::Tensor> all_tokens, all_images;
  Progress progress("sample", sampling::images_of_rank(N, a.batch, rank, world), "img");
  int64_t done_images = 0;
  const auto summary = sampling::run_sampling(
      g.model, vq.model ? std::optional<model::VQModel>(vq.model) : std::nullopt, run,
      [&](const sampling::SampledBatch& x) {
        if (!a.tokens_out.empty()) all_tokens.push_back(x.tokens);
        if (kind == OutKind::Grid) all_images.push_back(x.images);
        if (kind == OutKind::Dir) {
          for (int64_t i = 0; i < x.n; ++i) {
            char name[64];
            std::snprintf(name, sizeof name, "%06lld_class%04lld.png", (long long)(x.first + i),
                          (long long)x.classes[i].item<int64_t>());
            io::write_image(join_path(a.out, name), x.images[i]);
          }
        }
        progress.update(done_images += x.n);
      });
  const int64_t generated = summary.generated;
  const bool stopped = summary.stopped;
  if (dp) dp->barrier();  // every process's shards are written
  bool complete = !stopped;
  if (shards)
    for (int64_t s2 = 0; s2 < shards->num_shards(); ++s2) complete = complete && shards->done(s2);
  if (dp) dp->barrier();  // every process has looked at the parts before rank 0 assembles (and removes) them
  if (shards && !complete) {
    progress.finish();
    std::fprintf(stderr, "stopped after %lld batches%s; run the same command again to resume (%s)\n",
                 (long long)generated, stopped ? " as asked" : " (another process stopped early)",
                 shards->parts_dir().c_str());
    return;
  }
  if (shards && rank != 0) {  // rank 0 assembles the .npz
    progress.finish();
    return;
  }
  progress.finish();
  if (!a.tokens_out.empty()) io::write_npy(a.tokens_out, torch::cat(all_tokens));
  if (kind == OutKind::Grid) {
    auto nhwc = torch::cat(all_images).permute({0, 3, 1, 2});  // back to [N,C,H,W] uint8
    int64_t cols = a.per_class > 1 ? a.per_class : std::min<int64_t>(N, 8);
    auto grid = io::make_grid(nhwc, cols);
    if (a.per_class > 1) {  // one row per class: label the rows
      const std::vector<std::string> names = a.class_names.empty() ? std::vector<std::string>{} : read_lines(a.class_names);
      std::vector<std::string> labels;
      for (int64_t r = 0; r < N / a.per_class; ++r) {
        const int64_t c = classes[r * a.per_class].item<int64_t>();
        labels.push_back(c < static_cast<int64_t>(names.size()) ? names[c] : "class " + std::to_string(c));
      }
      io::write_labelled_rows_png(a.out, grid, labels);
    } else {
      io::write_image(a.out, grid);
    }
  }
  if (shards) shards->finalize(a.compress);
  std::fprintf(stderr, "sampled %lld images at %.2f images/s%s%s\n", (long long)N, progress.rate(),
               a.out.empty() ? "" : " -> ", a.out.c_str());
  if (const auto& sp = summary.speculative; sp.calls > 0)
    std::fprintf(stderr, "speculative decoding (%lld positions per call): %lld model calls for %lld tokens, %.2f tokens per call\n",
                 (long long)a.opts.speculative, (long long)sp.calls, (long long)sp.tokens, double(sp.tokens) / sp.calls);
}

}  // namespace

void add_sample(CLI::App& app) {
  auto a = std::make_shared<SampleArgs>();
  auto* cmd = app.add_subcommand("sample", "Generate class-conditional samples with the KV-cache sampler");
  cmd->add_option("--generator", a->generator, "generator checkpoint")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "VQ tokenizer checkpoint (needed for image outputs)");
  auto* cls = cmd->add_option("--classes", a->classes, "comma-separated class ids, e.g. 1,2,3");
  auto* all = cmd->add_flag("--all-classes", a->all_classes, "every class 0..C-1");
  cls->excludes(all);
  cmd->add_option("--per-class", a->per_class, "samples per listed class (ADM protocol: 50)")->check(positive_count());
  cmd->add_option("--class-names", a->class_names, "class names, one per line (e.g. train.rartok.classes.txt) to label grid rows");
  auto* cfg = cmd->add_option("--cfg", a->opts.cfg,
                              "guidance scale g (0 = no guidance; default: the generator's own setting, else 4)")
                  ->check(non_negative());
  auto* power = cmd->add_option("--cfg-power", a->opts.cfg_power,
                                "power p of the pow-cosine schedule (0 = constant g; default: the generator's own, else 0)")
                    ->check(non_negative());
  cmd->add_option("--cfg-schedule", a->schedule, "pow-cosine, linear or constant");
  auto* temp = cmd->add_option("--temperature", a->opts.temperature,
                               "softmax temperature (> 0; default: the generator's own, else 1)")->check(positive());
  cmd->add_option("--top-k", a->opts.top_k, "keep the k most likely tokens (1 = greedy, 0 = off)")->check(count());
  cmd->add_option("--top-p", a->opts.top_p, "nucleus sampling mass in (0, 1] (1 = off)")->check(positive());
  cmd->add_option("--seed", a->opts.seed, "random seed (batch i uses seed + i)")->check(count());
  add_generation_flags(cmd, a->gen, a->opts);
  cmd->add_option("--batch", a->batch, "images per batch")->check(positive_count());
  cmd->add_option("--decode-batch", a->decode_batch, "images decoded at once (decoder memory: ~8 GiB per 64 in bf16)")
      ->check(positive_count());
  cmd->add_flag("--channels-last", a->channels_last, "decoder in channels-last (NHWC) layout");
  cmd->add_option("--tokens-out", a->tokens_out, "write the sampled token ids, int64 [N,S] .npy");
  cmd->add_option("--out", a->out, "grid.png | directory/ | samples.npz (ADM layout, resumable)");
  cmd->add_flag("--compress", a->compress,
                "with an .npz output: deflate it (numpy's savez_compressed; ~5x smaller for small images, slower to write)");
  cmd->add_option("--max-batches", a->max_batches,
                  "with an .npz output: generate at most this many new batches, then stop (resume later)")->check(count());
  cmd->callback([a, cfg, power, temp] {
    a->cfg_given = cfg->count() > 0, a->power_given = power->count() > 0, a->temperature_given = temp->count() > 0;
    run(*a);
  });
}

}  // namespace rar::cli
