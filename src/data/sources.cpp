#include "data/sources.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "io/image.h"
#include "io/npy.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::data {
namespace {

// Images held in memory: uint8 [N,H,W,C] and labels [N].
class ArraySource : public ImageSource {
 public:
  ArraySource(torch::Tensor images, torch::Tensor labels, std::vector<std::string> names, const std::string& what)
      : images_(std::move(images)), labels_(std::move(labels)), names_(std::move(names)) {
    if (images_.dim() == 3) images_ = images_.unsqueeze(3);
    check(images_.dim() == 4 && images_.scalar_type() == torch::kUInt8, what,
          ": images must be uint8 [N,H,W] or [N,H,W,C], got ", images_.sizes(), " ", c10::toString(images_.scalar_type()));
    check(labels_.dim() == 1 && labels_.size(0) == images_.size(0) && !labels_.is_floating_point(), what,
          ": labels must be integers [", images_.size(0), "]");
    labels_ = labels_.to(torch::kInt64);
    check(labels_.numel() == 0 || labels_.min().item<int64_t>() >= 0, what, ": labels must be >= 0");
    if (names_.empty()) {
      int64_t n = labels_.numel() ? labels_.max().item<int64_t>() + 1 : 1;
      for (int64_t i = 0; i < n; ++i) names_.push_back(std::to_string(i));
    }
  }
  int64_t size() const override { return images_.size(0); }
  torch::Tensor image(int64_t i) const override { return images_[i]; }
  int64_t label(int64_t i) const override { return labels_[i].item<int64_t>(); }
  std::vector<std::string> class_names() const override { return names_; }

 private:
  torch::Tensor images_, labels_;
  std::vector<std::string> names_;
};

class FolderSource : public ImageSource {
 public:
  explicit FolderSource(const std::string& dir) {
    for (const auto& name : list_dir(dir)) {
      std::string sub = join_path(dir, name);
      const bool exists = path_exists(sub);  // errno read after the call, not among check's arguments
      check(exists, sub, ": cannot open (", std::strerror(errno), ")");  // e.g. a symlink loop
      if (!is_directory(sub)) continue;
      // class names are written one per line (classes.txt): a name that cannot be one line would
      // shift every later class's name
      if (name.find_first_of("\n\r") != std::string::npos) {
        std::string shown;  // the error stays one line
        for (char c : sub) shown += c == '\n' ? std::string("\\n") : c == '\r' ? std::string("\\r") : std::string(1, c);
        fail(shown, ": a class folder's name holds a line break (class names are kept one per line); rename the folder");
      }
      int64_t id = static_cast<int64_t>(names_.size());
      names_.push_back(name);
      const size_t before = items_.size();
      for (const auto& f : list_dir(sub)) {
        std::string lower = f;
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        if (has_suffix(lower, ".png") || has_suffix(lower, ".jpg") || has_suffix(lower, ".jpeg"))
          items_.emplace_back(join_path(sub, f), id);
      }
      // a class without samples would still take an id (and a name) the model is trained with
      check(items_.size() > before, sub, ": a class folder without .png/.jpg images; add images or remove the folder");
    }
    check(!names_.empty(), dir, ": no class sub-folders (expected DIR/<class>/*.png|jpg)");
    check(!items_.empty(), dir, ": no .png/.jpg images in its class folders");
  }
  int64_t size() const override { return static_cast<int64_t>(items_.size()); }
  torch::Tensor image(int64_t i) const override { return io::read_image(items_[i].first); }
  int64_t label(int64_t i) const override { return items_[i].second; }
  std::string name_of(int64_t i) const override { return items_[i].first; }
  std::vector<std::string> class_names() const override { return names_; }

 private:
  std::vector<std::string> names_;
  std::vector<std::pair<std::string, int64_t>> items_;
};

const char* const kFashionNames[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

std::string find_first(const std::vector<std::string>& candidates) {
  for (auto& c : candidates)
    if (path_exists(c)) return c;
  return "";
}

}  // namespace

namespace {

// An IDX file's bytes, plain or gzip-compressed (".gz"). A compressed file is inflated only as far
// as its header says the data goes (plus one byte, to notice trailing data), growing with what
// really comes out: a header that lies, or a gzip bomb, costs no more than the bytes it yields.
std::string read_idx_bytes(const std::string& path) {
  if (!has_suffix(path, ".gz")) return read_file(path);
  regular_file_size(path);
  gzFile f = gzopen(path.c_str(), "rb");
  check(f != nullptr, path, ": cannot open");
  std::string out;
  uint64_t want = 4;  // the magic first, then the dimensions, then the data
  bool header_done = false;
  for (;;) {
    if (out.size() >= 4 && want == 4) want = 4 + 4 * uint64_t(static_cast<uint8_t>(out[3]));
    if (!header_done && out.size() >= want && want > 4) {
      header_done = true;
      uint64_t numel = 1;
      for (uint64_t d = 0; d < (want - 4) / 4; ++d) {
        const auto* p = reinterpret_cast<const uint8_t*>(out.data()) + 4 + 4 * d;
        const uint64_t n = (uint64_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
        if (__builtin_mul_overflow(numel, n, &numel) || numel > (uint64_t(1) << 40)) numel = uint64_t(1) << 40;
      }
      want += numel + 1;
    }
    if (out.size() >= want) break;
    const uint64_t have = out.size();
    const uint64_t step = std::min<uint64_t>(want - have, std::max<uint64_t>(have, 1 << 16));
    out.resize(have + step);
    const int n = gzread(f, out.data() + have, static_cast<unsigned>(std::min<uint64_t>(step, 1 << 30)));
    if (n <= 0) {
      out.resize(have);
      if (n == 0) break;
      int err = 0;
      const std::string msg = gzerror(f, &err);  // a copy: the message lives in f, freed by gzclose
      gzclose(f);
      fail(path, ": corrupt gzip data (", msg, ")");
    }
    out.resize(have + static_cast<uint64_t>(n));
  }
  gzclose(f);
  return out;
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  std::string b = read_idx_bytes(path);
  check(b.size() >= 4 && b[0] == 0 && b[1] == 0, path, ": not an IDX file (bad magic)");
  check(static_cast<uint8_t>(b[2]) == 0x08, path, ": IDX element type 0x", std::hex, int(uint8_t(b[2])),
        " not supported (expected unsigned byte 0x08)");
  int dims = static_cast<uint8_t>(b[3]);
  check(dims >= 1 && dims <= 4 && b.size() >= 4 + 4 * size_t(dims), path, ": truncated IDX header");
  std::vector<int64_t> shape;
  uint64_t numel = 1;
  for (int d = 0; d < dims; ++d) {
    const auto* p = reinterpret_cast<const uint8_t*>(b.data()) + 4 + 4 * d;
    int64_t n = (int64_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
    shape.push_back(n);
    check(!__builtin_mul_overflow(numel, uint64_t(n), &numel), path, ": IDX shape ", c10::IntArrayRef(shape),
          " overflows");
  }
  const uint64_t start = 4 + 4 * uint64_t(dims), have = b.size() - start;
  check(have >= numel, path, ": truncated IDX data (", have, " bytes, shape ", c10::IntArrayRef(shape), " needs ",
        numel, ")");
  check(have == numel, path, ": trailing bytes after the IDX data (", have, " bytes, shape needs ", numel, ")");
  auto t = torch::empty(shape, torch::kUInt8);
  if (numel) std::memcpy(t.data_ptr(), b.data() + start, numel);  // an empty tensor has no buffer
  return t;
}

std::string resolve_test_split(const std::string& test, const std::string& train) {
  if (test == "none") return "";
  if (test != "auto") return test;
  for (const char* ds : {"fashion-mnist", "mnist"}) {
    const std::string d(ds);
    if (train == d || train == d + ":train") return d + ":test";
  }
  return "";
}

std::unique_ptr<ImageSource> open_source(const std::string& spec) {
  // Named datasets from Debian's packages.
  for (const char* name : {"fashion-mnist", "mnist"}) {
    std::string n = name;
    if (spec == n || spec == n + ":train" || spec == n + ":test") {
      bool test = has_suffix(spec, ":test");
      const char* root = std::getenv("RAR_DATASETS_DIR");  // default: where Debian's packages put them
      std::string dir = std::string(root && *root ? root : "/usr/share/datasets") + "/" + n,
                  prefix = test ? "t10k" : "train";
      std::string images = find_first({dir + "/" + prefix + "-images-idx3-ubyte.gz", dir + "/" + prefix + "-images-idx3-ubyte"});
      std::string labels = find_first({dir + "/" + prefix + "-labels-idx1-ubyte.gz", dir + "/" + prefix + "-labels-idx1-ubyte"});
      check(!images.empty() && !labels.empty(), spec, ": not found under ", dir, " (apt-get install dataset-", n,
            n == "mnist" ? "" : "", ")");
      std::vector<std::string> names;
      if (n == "fashion-mnist") names.assign(std::begin(kFashionNames), std::end(kFashionNames));
      return std::make_unique<ArraySource>(read_idx(images), read_idx(labels), names, images);
    }
  }
  if (is_directory(spec)) return std::make_unique<FolderSource>(spec);
  check(path_exists(spec), spec, ": no such file or directory");
  if (spec.find("idx3-ubyte") != std::string::npos) {
    std::string labels = spec;
    labels.replace(labels.find("images-idx3"), 11, "labels-idx1");
    check(path_exists(labels), spec, ": labels file ", labels, " not found");
    return std::make_unique<ArraySource>(read_idx(spec), read_idx(labels), std::vector<std::string>{}, spec);
  }
  if (has_suffix(spec, ".npz")) {
    torch::Tensor images, labels;
    for (auto& [name, t] : io::read_npz(spec)) {
      if (name == "arr_0" || name == "images") images = t;
      if (name == "arr_1" || name == "labels") labels = t;
    }
    check(images.defined(), spec, ": no 'arr_0' or 'images' array");
    if (!labels.defined()) labels = torch::zeros({images.size(0)}, torch::kInt64);
    return std::make_unique<ArraySource>(images, labels, std::vector<std::string>{}, spec);
  }
  if (has_suffix(spec, ".npy")) {
    auto images = io::read_npy(spec);
    std::string lab = spec.substr(0, spec.size() - 4) + "_labels.npy";
    auto labels = path_exists(lab) ? io::read_npy(lab) : torch::zeros({images.size(0)}, torch::kInt64);
    return std::make_unique<ArraySource>(images, labels, std::vector<std::string>{}, spec);
  }
  // A single image file.
  auto img = io::read_image(spec).unsqueeze(0);
  return std::make_unique<ArraySource>(img, torch::zeros({1}, torch::kInt64), std::vector<std::string>{}, spec);
}

}  // namespace rar::data
