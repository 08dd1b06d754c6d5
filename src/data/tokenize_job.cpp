// tokenize_job.cpp — see tokenize_job.h.
#include "data/tokenize_job.h"

#include <ATen/Parallel.h>

#include <cstdio>

#include "data/prepare.h"
#include "data/sources.h"
#include "data/token_file.h"
#include "data/transforms.h"
#include "io/npy.h"
#include "io/parts_dir.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace rar::data {

bool tokenize_dataset(model::LoadedVQ& vq, const torch::Device& device, const TokenizeSettings& a) {
  auto src = data::open_source(a.images);
  check(has_suffix(a.out, ".rartok"), "--out ", a.out, ": expected a .rartok file");
  check(!is_directory(a.out), "--out ", a.out, ": is a folder; expected the path of a .rartok file");
  const int64_t views = a.ten_crop ? 10 : (a.flip ? 2 : 1);
  const std::string parts = a.out + ".parts";
  const auto lock = io::open_parts_dir(parts, {{"tokenizer", a.tokenizer}, {"data", a.images}, {"size", a.size}, {"pad", a.pad},
                         {"flip", a.flip}, {"ten_crop", a.ten_crop}, {"chunk", a.chunk}, {"count", src->size()},
                         {"precision", a.precision}, {"batch", a.batch}, {"device", device.is_cuda() ? "cuda" : "cpu"}},
                                       a.out);
  remove_stale_temp_files(parts);  // chunks half-written by a killed run
  remove_stale_temp_files(parent_dir(a.out), basename_of(a.out));

  Progress p("tokenize", src->size(), "img");
  std::vector<torch::Tensor> all_tokens, all_labels;
  int64_t made = 0;
  for (int64_t c = 0, first = 0; first < src->size(); ++c, first += a.chunk) {
    const int64_t n = std::min(a.chunk, src->size() - first);
    char name[32];
    std::snprintf(name, sizeof name, "chunk-%06lld.npz", (long long)c);
    const std::string chunk_path = join_path(parts, name);
    torch::Tensor tokens, labels;
    if (path_exists(chunk_path)) {  // finished by an earlier run
      for (auto& [k, t] : io::read_npz(chunk_path)) (k == "tokens" ? tokens : labels) = t;
    } else {
      if (a.max_chunks > 0 && made == a.max_chunks) {
        p.finish();
        std::fprintf(stderr, "stopped after %lld chunks as asked; run the same command again to resume (%s)\n",
                     (long long)made, parts.c_str());
        return false;
      }
      ++made;
      torch::NoGradGuard ng;
      std::vector<torch::Tensor> tok, lab;
      for (int64_t i = 0; i < n; i += a.batch) {
        const int64_t m = std::min(a.batch, n - i);
        std::vector<torch::Tensor> imgs(m * views);
        at::parallel_for(0, m, 1, [&](int64_t b, int64_t e) {
          for (int64_t j = b; j < e; ++j) {
            const std::string name = src->name_of(first + i + j);
            try {
              auto img = src->image(first + i + j);
              if (img.size(2) == 1 && vq.cfg.image_channels == 3) img = img.expand({img.size(0), img.size(1), 3});
              if (a.ten_crop) {
                auto crops = data::ten_crop(img, a.size);
                for (int64_t v = 0; v < 10; ++v) imgs[j * views + v] = prepare(crops[v], 0, vq.cfg.image_channels);
              } else {
                imgs[j * views] = prepare(img, a.size, vq.cfg.image_channels, a.pad).contiguous();
                if (a.flip) imgs[j * views + 1] = data::hflip(imgs[j * views]);
              }
            } catch (const Error& err) {
              const std::string what = err.what();
              if (what.compare(0, name.size(), name) == 0) throw;  // the reader named the file already
              fail(name, ": ", what);
            }
          }
        });
        for (int64_t j = 1; j < m * views; ++j)  // one batch is one tensor
          check(imgs[j].sizes() == imgs[0].sizes(), src->name_of(first + i + j / views), ": prepares to ", imgs[j].size(0),
                "x", imgs[j].size(1), ", ", src->name_of(first + i), " to ", imgs[0].size(0), "x", imgs[0].size(1),
                ": images of one dataset must share a size (crop or pad them: --size, --pad)");
        tok.push_back(vq.model->encode(to_input(imgs, device)).cpu());
        for (int64_t j = 0; j < m; ++j)
          for (int64_t v = 0; v < views; ++v) lab.push_back(torch::tensor(src->label(first + i + j), torch::kInt64));
        p.update(first + i + m);
      }
      tokens = torch::cat(tok);
      labels = torch::stack(lab);
      io::write_npz(chunk_path, {{"tokens", tokens}, {"labels", labels}});
    }
    all_tokens.push_back(tokens);
    all_labels.push_back(labels);
    p.update(first + n);
  }
  p.finish();
  auto tokens = torch::cat(all_tokens), labels = torch::cat(all_labels);
  data::write_token_file(a.out, tokens, labels, vq.cfg.codebook_size, src->num_classes());
  // The class map beside the output: one name per line, line i = class id i.
  std::string names;
  for (auto& n : src->class_names()) names += n + "\n";
  write_file_atomic(a.out + ".classes.txt", names);
  remove_tree(parts);
  std::fprintf(stderr, "wrote %s: %lld sequences of %lld tokens (V=%lld, %lld classes)\n", a.out.c_str(),
               (long long)tokens.size(0), (long long)tokens.size(1), (long long)vq.cfg.codebook_size,
               (long long)src->num_classes());
  return true;
}

}  // namespace rar::data
