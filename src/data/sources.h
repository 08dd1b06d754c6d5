// sources.h — labelled image collections the tokenizer and trainer read:
//   ImageFolder   DIR/<class>/*.png|jpg — class ids are the sorted folder names
//   IDX           MNIST / Fashion-MNIST files (`*-images-idx3-ubyte[.gz]` + `*-labels-idx1-ubyte`)
//   arrays        .npy images uint8 [N,H,W(,C)] (labels from a sibling .npy or all 0), or .npz with
//                 `arr_0`/`images` and `arr_1`/`labels`
// Every image comes out as uint8 [H,W,C].
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace rar::data {

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual int64_t size() const = 0;
  virtual torch::Tensor image(int64_t i) const = 0;  // uint8 [H,W,C]
  virtual int64_t label(int64_t i) const = 0;
  virtual std::vector<std::string> class_names() const = 0;  // index = class id
  // What an error about image i names: its file, or its index in the dataset.
  virtual std::string name_of(int64_t i) const { return "image " + std::to_string(i); }
  int64_t num_classes() const { return static_cast<int64_t>(class_names().size()); }
};

// Opens `spec`: a directory (ImageFolder), an IDX images file, "fashion-mnist[:train|:test]" /
// "mnist[:train|:test]" (Debian's dataset packages under /usr/share/datasets), or .npy/.npz.
std::unique_ptr<ImageSource> open_source(const std::string& spec);

// The held-out set a trainer evaluates on: "auto" means the :test split when `train` names
// fashion-mnist/mnist (else none), "none" means none (""), anything else is taken as given.
std::string resolve_test_split(const std::string& test, const std::string& train);

// IDX (big-endian header, magic 0x0000080D with D dims) of unsigned bytes: uint8 tensor.
torch::Tensor read_idx(const std::string& path);

}  // namespace rar::data
