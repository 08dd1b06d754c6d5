// inception.h — Inception-v3 as used for FID (the pytorch-fid variant of the TensorFlow FID
// network): torchvision's Inception3 with 1008 classes, no aux head, and the FID patches —
// average pools that do not count padding in Mixed_5b..6e/7b, and a max pool in Mixed_7c's pool
// branch. Module names are those of `pt_inception-2015-12-05-6726825d.pth`
// (`Conv2d_1a_3x3.conv.weight`, `Mixed_7c.branch_pool.bn.running_var`, `fc.weight`, ...), so that
// file loads 1:1 through our checkpoint reader.
//
// features(): images float [B,3,H,W] in [0,1] -> bilinear resize to 299x299 (align_corners=False),
// scale to [-1,1], the network, global average pool: pool3 features [B,2048]. logits(): [B,1008].
#pragma once
#include <array>
#include <string>

#include <torch/torch.h>

namespace rar::eval {

struct BasicConv2dImpl : torch::nn::Module {
  BasicConv2dImpl(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> stride = {1, 1},
                  std::vector<int64_t> padding = {0, 0});
  torch::Tensor forward(const torch::Tensor& x);  // relu(bn(conv(x))), bn eps 1e-3
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(BasicConv2d);

struct InceptionAImpl : torch::nn::Module {
  InceptionAImpl(int64_t in, int64_t pool_features);
  torch::Tensor forward(const torch::Tensor& x);
  BasicConv2d branch1x1{nullptr}, branch5x5_1{nullptr}, branch5x5_2{nullptr}, branch3x3dbl_1{nullptr},
      branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr}, branch_pool{nullptr};
};
TORCH_MODULE(InceptionA);

struct InceptionBImpl : torch::nn::Module {
  explicit InceptionBImpl(int64_t in);
  torch::Tensor forward(const torch::Tensor& x);
  BasicConv2d branch3x3{nullptr}, branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr};
};
TORCH_MODULE(InceptionB);

struct InceptionCImpl : torch::nn::Module {
  InceptionCImpl(int64_t in, int64_t c7);
  torch::Tensor forward(const torch::Tensor& x);
  BasicConv2d branch1x1{nullptr}, branch7x7_1{nullptr}, branch7x7_2{nullptr}, branch7x7_3{nullptr},
      branch7x7dbl_1{nullptr}, branch7x7dbl_2{nullptr}, branch7x7dbl_3{nullptr}, branch7x7dbl_4{nullptr},
      branch7x7dbl_5{nullptr}, branch_pool{nullptr};
};
TORCH_MODULE(InceptionC);

struct InceptionDImpl : torch::nn::Module {
  explicit InceptionDImpl(int64_t in);
  torch::Tensor forward(const torch::Tensor& x);
  BasicConv2d branch3x3_1{nullptr}, branch3x3_2{nullptr}, branch7x7x3_1{nullptr}, branch7x7x3_2{nullptr},
      branch7x7x3_3{nullptr}, branch7x7x3_4{nullptr};
};
TORCH_MODULE(InceptionD);

// max_pool_branch: Mixed_7c's patch (max pool instead of average pool before branch_pool).
struct InceptionEImpl : torch::nn::Module {
  InceptionEImpl(int64_t in, bool max_pool_branch);
  torch::Tensor forward(const torch::Tensor& x);
  bool max_pool_branch;
  BasicConv2d branch1x1{nullptr}, branch3x3_1{nullptr}, branch3x3_2a{nullptr}, branch3x3_2b{nullptr},
      branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3a{nullptr}, branch3x3dbl_3b{nullptr},
      branch_pool{nullptr};
};
TORCH_MODULE(InceptionE);

struct FidInceptionImpl : torch::nn::Module {
  FidInceptionImpl();
  torch::Tensor pool3(const torch::Tensor& images);  // [B,2048]
  torch::Tensor logits(const torch::Tensor& pool3);  // [B,1008]
  // The network on inputs already resized to 299x299 and scaled as the graph scales them: the
  // pool_3 features [B,2048] and the output of Mixed_6d's 1x1 branch [B,192,17,17] (the graph's
  // `mixed_6/conv`, whose first 7 channels are ADM's spatial features).
  std::array<torch::Tensor, 2> pool3_and_mixed6_conv(const torch::Tensor& x299);
  BasicConv2d Conv2d_1a_3x3{nullptr}, Conv2d_2a_3x3{nullptr}, Conv2d_2b_3x3{nullptr}, Conv2d_3b_1x1{nullptr},
      Conv2d_4a_3x3{nullptr};
  InceptionA Mixed_5b{nullptr}, Mixed_5c{nullptr}, Mixed_5d{nullptr};
  InceptionB Mixed_6a{nullptr};
  InceptionC Mixed_6b{nullptr}, Mixed_6c{nullptr}, Mixed_6d{nullptr}, Mixed_6e{nullptr};
  InceptionD Mixed_7a{nullptr};
  InceptionE Mixed_7b{nullptr}, Mixed_7c{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(FidInception);

// Loads the FID weights (pt_inception-2015-12-05-6726825d.pth, or our safetensors copy) strictly.
FidInception load_fid_inception(const std::string& path, const torch::Device& device);

}  // namespace rar::eval
