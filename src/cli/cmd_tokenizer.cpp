// `rar encode | decode | reconstruct | tokenize` — images to tokens and back with a VQ tokenizer
// (DESIGN §6), and whole datasets to the pretokenized .rartok format the trainer reads.
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "data/prepare.h"
#include "data/sources.h"
#include "data/token_file.h"
#include "data/jsonl_tokens.h"
#include "data/tokenize_job.h"
#include "data/transforms.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/parts_dir.h"
#include "model/vqgan.h"
#include "util/atomic_file.h"
#include "util/device.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::cli {
namespace {

using data::load_range;
using data::prepare;
using data::to_input;

struct TokArgs {
  std::string tokenizer, images, tokens, out, device = "auto", precision = "fp32", jsonl;
  int64_t size = 0, pad = 0, batch = 32, chunk = 4096, max_chunks = 0;
  int64_t codebook = 1024, classes = 1000, seq_len = 256, chunk_lines = 1 << 18;
  bool flip = false, ten_crop = false;
};

// The device, with the precision mode applied first: "fp32" turns TF32 off (cuDNN convolutions
// default to TF32, which moves decoded pixels by up to ~4/255); "tf32" allows it for speed.
torch::Device pick_device(const std::string& d, const std::string& precision = "fp32") {
  check(precision == "fp32" || precision == "tf32", "--precision: expected fp32 or tf32, got '", precision, "'");
  parse_precision(precision);
  return parse_device(d);
}

void write_images(const std::string& out, const torch::Tensor& images /*[N,C,H,W] float*/) {
  if (has_suffix(out, ".npy")) return io::write_npy(out, images.cpu().to(torch::kFloat32));
  if (has_suffix(out, ".png")) {
    int64_t cols = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(double(images.size(0))))));
    return io::write_image(out, io::make_grid(images, cols));
  }
  check(has_suffix(out, "/") || is_directory(out), "--out ", out, ": expected .npy, .png or a directory/");
  make_dirs(out);
  auto u8 = io::to_uint8_nhwc(images).cpu();
  for (int64_t i = 0; i < u8.size(0); ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%06lld.png", (long long)i);
    io::write_image(join_path(out, name), u8[i]);
  }
}

torch::Tensor encode_all(model::LoadedVQ& vq, const data::ImageSource& src, const TokArgs& a,
                         const torch::Device& device, torch::Tensor* originals) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> codes, keep;
  Progress p("encode", src.size(), "img");
  for (int64_t i = 0; i < src.size(); i += a.batch) {
    int64_t n = std::min(a.batch, src.size() - i);
    auto imgs = load_range(src, i, n, a.size, vq.cfg.image_channels, a.pad);
    auto x = to_input(imgs, device);
    codes.push_back(vq.model->encode(x).cpu());
    if (originals) keep.push_back(x.cpu());
    p.update(i + n);
  }
  p.finish();
  if (originals) *originals = torch::cat(keep);
  return torch::cat(codes);
}

// Token ids [N,h*w] -> images float [N,C,H,W] on the CPU, in batches on `device`.
torch::Tensor decode_all(model::LoadedVQ& vq, const torch::Tensor& codes, int64_t batch, const torch::Device& device) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < codes.size(0); i += batch)
    out.push_back(vq.model->decode(codes.narrow(0, i, std::min(batch, codes.size(0) - i)).to(device, torch::kInt64)).cpu());
  return torch::cat(out);
}

void run_tokenize(const TokArgs& a) {
  const auto device = pick_device(a.device, a.precision);
  auto vq = model::load_vq(a.tokenizer, device);
  data::TokenizeSettings t;
  t.tokenizer = a.tokenizer, t.images = a.images, t.out = a.out, t.precision = a.precision;
  t.size = a.size, t.pad = a.pad, t.batch = a.batch, t.chunk = a.chunk, t.max_chunks = a.max_chunks;
  t.flip = a.flip, t.ten_crop = a.ten_crop;
  data::tokenize_dataset(vq, device, t);
}

}  // namespace

void add_tokenizer_commands(CLI::App& app) {
  auto a = std::make_shared<TokArgs>();
  auto common = [&](CLI::App* c, bool needs_tokenizer = true) {
    auto* t = c->add_option("--tokenizer", a->tokenizer, "VQ tokenizer checkpoint");
    if (needs_tokenizer) t->required();
    c->add_option("--device", a->device, "auto, cpu, cuda or cuda:N");
    c->add_option("--precision", a->precision, "fp32 (exact, TF32 off) or tf32 (faster convolutions on CUDA)");
    c->add_option("--batch", a->batch, "images per batch")->check(positive_count());
  };
  auto* enc = app.add_subcommand("encode", "Images to token ids int64 [N, h*w] (.npy)");
  common(enc);
  enc->add_option("--data,--images", a->images, "images: .npy uint8 [N,H,W,C], .npz, a folder, IDX, or one image")->required();
  enc->add_option("--out", a->out, "token ids .npy")->required();
  enc->add_option("--size", a->size, "ADM center crop to this size first (0 = use images as they are)")->check(count());
  enc->add_option("--pad", a->pad, "zero-pad images to this square size (e.g. 32 for 28x28 MNIST)")->check(count());
  enc->callback([a] {
    auto device = pick_device(a->device, a->precision);
    auto vq = model::load_vq(a->tokenizer, device);
    auto src = data::open_source(a->images);
    io::write_npy(a->out, encode_all(vq, *src, *a, device, nullptr));
  });

  auto* dec = app.add_subcommand("decode", "Token ids to images: recon.npy (float32 [N,C,H,W]) | grid.png | dir/");
  common(dec);
  dec->add_option("--tokens", a->tokens, "token ids int [N, h*w] (.npy or .npz[:name])")->required();
  dec->add_option("--out", a->out, "recon.npy | grid.png | directory/")->required();
  dec->callback([a] {
    auto device = pick_device(a->device, a->precision);
    auto vq = model::load_vq(a->tokenizer, device);
    auto tokens = io::read_array(a->tokens);
    check(tokens.dim() == 2 && !tokens.is_floating_point(), a->tokens, ": expected integer token ids [N, h*w]");
    write_images(a->out, decode_all(vq, tokens, a->batch, device));
  });

  auto* rec = app.add_subcommand("reconstruct", "Image -> tokens -> image; prints PSNR");
  common(rec);
  rec->add_option("--data,--images", a->images, "images (as for encode)")->required();
  rec->add_option("--out", a->out, "optional: side-by-side grid .png (originals then reconstructions) or .npy");
  rec->add_option("--size", a->size, "ADM center crop to this size first")->check(count());
  rec->add_option("--pad", a->pad, "zero-pad images to this square size")->check(count());
  rec->callback([a] {
    auto device = pick_device(a->device, a->precision);
    auto vq = model::load_vq(a->tokenizer, device);
    auto src = data::open_source(a->images);
    torch::Tensor originals;
    auto codes = encode_all(vq, *src, *a, device, &originals);
    auto recon = decode_all(vq, codes, a->batch, device);
    auto mse = (recon - originals).pow(2).flatten(1).mean(1);
    auto psnr = (-10.0 * torch::log10(mse.clamp_min(1e-10)));
    std::printf("PSNR %.2f dB (mean over %lld images; min %.2f, max %.2f)\n", psnr.mean().item<double>(),
                (long long)psnr.size(0), psnr.min().item<double>(), psnr.max().item<double>());
    if (!a->out.empty()) write_images(a->out, has_suffix(a->out, ".npy") ? recon : torch::cat({originals, recon}));
  });

  auto* tok = app.add_subcommand("tokenize", "A dataset to the pretokenized .rartok format (resumable)");
  common(tok, /*needs_tokenizer=*/false);
  auto* data = tok->add_option("--data", a->images,
                               "ImageFolder DIR, fashion-mnist[:train|:test], mnist[...], IDX file, .npy/.npz");
  auto* jsonl = tok->add_option("--from-jsonl", a->jsonl,
                                "the published code's pretokenized .jsonl ({\"class_id\", \"tokens\"} per line, e.g. "
                                "maskgitvq.jsonl) instead of images: converted, no tokenizer needed");
  jsonl->excludes(data);
  tok->add_option("--codebook", a->codebook, "with --from-jsonl: codebook size V (default 1024)")->check(positive_count());
  tok->add_option("--classes", a->classes, "with --from-jsonl: number of classes C (default 1000)")->check(positive_count());
  tok->add_option("--seq-len", a->seq_len, "with --from-jsonl: tokens per line S (default 256)")->check(positive_count());
  tok->add_option("--chunk-lines", a->chunk_lines, "with --from-jsonl: lines per resumable chunk")->check(positive_count());
  tok->add_option("--out", a->out, "train.rartok (class names go to train.rartok.classes.txt)")->required();
  tok->add_option("--size", a->size, "ADM center crop size (0 = images as they are)")->check(count());
  tok->add_option("--pad", a->pad, "zero-pad images to this square size (e.g. 32 for Fashion-MNIST)")->check(count());
  tok->add_flag("--flip", a->flip, "also store each image mirrored");
  tok->add_flag("--ten-crop", a->ten_crop, "store the ten crops at 1.1x (needs --size)");
  tok->add_option("--chunk", a->chunk, "images per resumable chunk")->check(positive_count());
  tok->add_option("--max-chunks", a->max_chunks, "encode at most this many new chunks, then stop (resume later)")->check(count());
  tok->callback([a] {
    if (!a->jsonl.empty()) {
      data::JsonlSettings s;
      s.jsonl = a->jsonl, s.out = a->out, s.codebook = a->codebook, s.classes = a->classes, s.seq_len = a->seq_len;
      s.chunk_lines = a->chunk_lines, s.max_chunks = a->max_chunks;
      data::convert_jsonl_tokens(s);
      return;
    }
    check(!a->images.empty() && !a->tokenizer.empty(), "tokenize: give --data and --tokenizer (or --from-jsonl)");
    check(!a->ten_crop || a->size > 0, "--ten-crop needs --size");
    check(!(a->ten_crop && a->flip), "--ten-crop already includes the mirrored crops; drop --flip");
    run_tokenize(*a);
  });
}

}  // namespace rar::cli
