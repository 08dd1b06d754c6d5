#include "io/sample_shards.h"

#include <cstdio>
#include <fstream>

#include "io/npy.h"
#include "io/parts_dir.h"
#include "io/zip.h"
#include "util/atomic_file.h"
#include "util/crash_point.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {

SampleShards::SampleShards(std::string out_path, int64_t total, int64_t shard_size, const nlohmann::json& settings,
                           bool own)
    : out_(std::move(out_path)), dir_(out_ + ".parts"), total_(total), shard_size_(shard_size) {
  check(total > 0 && shard_size > 0, out_, ": nothing to sample");
  check(!is_directory(out_), out_, ": is a folder; expected the path of an .npz file");
  lock_ = open_parts_dir(dir_, {{"total", total}, {"shard_size", shard_size}, {"settings", settings}}, out_, own);
  remove_stale_temp_files(dir_);  // shards half-written by a killed run
  remove_stale_temp_files(parent_dir(out_), basename_of(out_));
}

std::string SampleShards::shard_path(int64_t shard) const {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%06lld.npz", static_cast<long long>(shard));
  return join_path(dir_, name);
}

int64_t SampleShards::shard_count(int64_t shard) const {
  return std::min(shard_size_, total_ - shard * shard_size_);
}

bool SampleShards::done(int64_t shard) const {
  const std::string p = shard_path(shard);
  if (!path_exists(p)) return false;
  try {
    auto arrays = read_npz(p);
    for (auto& [name, t] : arrays)
      if (name == "labels") return t.size(0) == shard_count(shard);
  } catch (const Error&) {
  }
  return false;  // unreadable or incomplete: it will be regenerated
}

void SampleShards::write(int64_t shard, const torch::Tensor& images, const torch::Tensor& labels,
                         const torch::Tensor& tokens) {
  check(labels.size(0) == shard_count(shard), out_, ": shard ", shard, " expects ", shard_count(shard), " samples");
  NamedArrays arrays = {{"images", images}, {"labels", labels}};
  if (tokens.defined()) arrays.emplace_back("tokens", tokens);
  write_npz(shard_path(shard), arrays);
}

torch::Tensor SampleShards::tokens(int64_t shard) const {
  for (auto& [name, t] : read_npz(shard_path(shard)))
    if (name == "tokens") return t;
  fail(shard_path(shard), ": holds no tokens");
}

void SampleShards::finalize(bool compress) {
  // Stream arr_0 to a temporary .npy next to the output, then zip it with arr_1.
  std::vector<torch::Tensor> labels;
  std::vector<int64_t> image_shape;
  const std::string tmp_images = dir_ + "/arr_0.npy.tmp";
  {
    std::ofstream f(tmp_images, std::ios::binary | std::ios::trunc);
    check(f.good(), tmp_images, ": cannot open for writing");
    for (int64_t s = 0; s < num_shards(); ++s) {
      check(done(s), out_, ": shard ", s, " is missing; run the same command again to finish it");
      torch::Tensor images;
      for (auto& [name, t] : read_npz(shard_path(s))) {
        if (name == "images") images = t;
        if (name == "labels") labels.push_back(t);
      }
      check(images.defined() && images.scalar_type() == torch::kUInt8 && images.dim() == 4, shard_path(s),
            ": no uint8 images");
      if (s == 0) {
        image_shape = {total_, images.size(1), images.size(2), images.size(3)};
        f << npy_header(torch::kUInt8, image_shape);
      }
      f.write(static_cast<const char*>(images.data_ptr()), images.numel());
      f.flush();
      crash_point("sample.finalize-shard");
    }
    check(f.good(), tmp_images, ": write failed");
  }
  ZipWriter zip(out_);
  zip.set_compress(compress);
  zip.add_file("arr_0.npy", tmp_images);
  zip.add("arr_1.npy", npy_encode(torch::cat(labels)));
  zip.commit();
  remove_tree(dir_);
}

}  // namespace rar::io
