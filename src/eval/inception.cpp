// inception.cpp — see inception.h.
#include "eval/inception.h"

#include "io/checkpoint.h"
#include "model/weights.h"

namespace rar::eval {

namespace F = torch::nn::functional;

BasicConv2dImpl::BasicConv2dImpl(int64_t in, int64_t out, std::vector<int64_t> k, std::vector<int64_t> s,
                                 std::vector<int64_t> p) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(s).padding(p).bias(false)));
  bn = register_module("bn", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out).eps(0.001)));
}
torch::Tensor BasicConv2dImpl::forward(const torch::Tensor& x) { return torch::relu(bn(conv(x))); }

namespace {
// TensorFlow's average pool: padding does not count in the mean.
torch::Tensor tf_avg_pool(const torch::Tensor& x) {
  return F::avg_pool2d(x, F::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(false));
}
torch::Tensor max_pool(const torch::Tensor& x, int64_t stride, int64_t pad = 0) {
  return F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(stride).padding(pad));
}
}  // namespace

BasicConv2d basic(int64_t in, int64_t out, std::vector<int64_t> k, std::vector<int64_t> s = {1, 1},
                  std::vector<int64_t> p = {0, 0}) {
  return BasicConv2d(in, out, std::move(k), std::move(s), std::move(p));
}

#define RAR_CONV(name, ...) name = register_module(#name, basic(__VA_ARGS__))

InceptionAImpl::InceptionAImpl(int64_t in, int64_t pool_features) {
  RAR_CONV(branch1x1, in, 64, {1, 1});
  RAR_CONV(branch5x5_1, in, 48, {1, 1});
  RAR_CONV(branch5x5_2, 48, 64, {5, 5}, {1, 1}, {2, 2});
  RAR_CONV(branch3x3dbl_1, in, 64, {1, 1});
  RAR_CONV(branch3x3dbl_2, 64, 96, {3, 3}, {1, 1}, {1, 1});
  RAR_CONV(branch3x3dbl_3, 96, 96, {3, 3}, {1, 1}, {1, 1});
  RAR_CONV(branch_pool, in, pool_features, {1, 1});
}
torch::Tensor InceptionAImpl::forward(const torch::Tensor& x) {
  return torch::cat({branch1x1(x), branch5x5_2(branch5x5_1(x)), branch3x3dbl_3(branch3x3dbl_2(branch3x3dbl_1(x))),
                     branch_pool(tf_avg_pool(x))},
                    1);
}

InceptionBImpl::InceptionBImpl(int64_t in) {
  RAR_CONV(branch3x3, in, 384, {3, 3}, {2, 2});
  RAR_CONV(branch3x3dbl_1, in, 64, {1, 1});
  RAR_CONV(branch3x3dbl_2, 64, 96, {3, 3}, {1, 1}, {1, 1});
  RAR_CONV(branch3x3dbl_3, 96, 96, {3, 3}, {2, 2});
}
torch::Tensor InceptionBImpl::forward(const torch::Tensor& x) {
  return torch::cat({branch3x3(x), branch3x3dbl_3(branch3x3dbl_2(branch3x3dbl_1(x))), max_pool(x, 2)}, 1);
}

InceptionCImpl::InceptionCImpl(int64_t in, int64_t c7) {
  RAR_CONV(branch1x1, in, 192, {1, 1});
  RAR_CONV(branch7x7_1, in, c7, {1, 1});
  RAR_CONV(branch7x7_2, c7, c7, {1, 7}, {1, 1}, {0, 3});
  RAR_CONV(branch7x7_3, c7, 192, {7, 1}, {1, 1}, {3, 0});
  RAR_CONV(branch7x7dbl_1, in, c7, {1, 1});
  RAR_CONV(branch7x7dbl_2, c7, c7, {7, 1}, {1, 1}, {3, 0});
  RAR_CONV(branch7x7dbl_3, c7, c7, {1, 7}, {1, 1}, {0, 3});
  RAR_CONV(branch7x7dbl_4, c7, c7, {7, 1}, {1, 1}, {3, 0});
  RAR_CONV(branch7x7dbl_5, c7, 192, {1, 7}, {1, 1}, {0, 3});
  RAR_CONV(branch_pool, in, 192, {1, 1});
}
torch::Tensor InceptionCImpl::forward(const torch::Tensor& x) {
  auto b7 = branch7x7_3(branch7x7_2(branch7x7_1(x)));
  auto b7d = branch7x7dbl_5(branch7x7dbl_4(branch7x7dbl_3(branch7x7dbl_2(branch7x7dbl_1(x)))));
  return torch::cat({branch1x1(x), b7, b7d, branch_pool(tf_avg_pool(x))}, 1);
}

InceptionDImpl::InceptionDImpl(int64_t in) {
  RAR_CONV(branch3x3_1, in, 192, {1, 1});
  RAR_CONV(branch3x3_2, 192, 320, {3, 3}, {2, 2});
  RAR_CONV(branch7x7x3_1, in, 192, {1, 1});
  RAR_CONV(branch7x7x3_2, 192, 192, {1, 7}, {1, 1}, {0, 3});
  RAR_CONV(branch7x7x3_3, 192, 192, {7, 1}, {1, 1}, {3, 0});
  RAR_CONV(branch7x7x3_4, 192, 192, {3, 3}, {2, 2});
}
torch::Tensor InceptionDImpl::forward(const torch::Tensor& x) {
  return torch::cat({branch3x3_2(branch3x3_1(x)), branch7x7x3_4(branch7x7x3_3(branch7x7x3_2(branch7x7x3_1(x)))),
                     max_pool(x, 2)},
                    1);
}

InceptionEImpl::InceptionEImpl(int64_t in, bool max_pool_branch_) : max_pool_branch(max_pool_branch_) {
  RAR_CONV(branch1x1, in, 320, {1, 1});
  RAR_CONV(branch3x3_1, in, 384, {1, 1});
  RAR_CONV(branch3x3_2a, 384, 384, {1, 3}, {1, 1}, {0, 1});
  RAR_CONV(branch3x3_2b, 384, 384, {3, 1}, {1, 1}, {1, 0});
  RAR_CONV(branch3x3dbl_1, in, 448, {1, 1});
  RAR_CONV(branch3x3dbl_2, 448, 384, {3, 3}, {1, 1}, {1, 1});
  RAR_CONV(branch3x3dbl_3a, 384, 384, {1, 3}, {1, 1}, {0, 1});
  RAR_CONV(branch3x3dbl_3b, 384, 384, {3, 1}, {1, 1}, {1, 0});
  RAR_CONV(branch_pool, in, 192, {1, 1});
}
torch::Tensor InceptionEImpl::forward(const torch::Tensor& x) {
  auto b3 = branch3x3_1(x);
  auto b3d = branch3x3dbl_2(branch3x3dbl_1(x));
  auto pooled = max_pool_branch ? max_pool(x, 1, 1) : tf_avg_pool(x);
  return torch::cat({branch1x1(x), torch::cat({branch3x3_2a(b3), branch3x3_2b(b3)}, 1),
                     torch::cat({branch3x3dbl_3a(b3d), branch3x3dbl_3b(b3d)}, 1), branch_pool(pooled)},
                    1);
}

FidInceptionImpl::FidInceptionImpl() {
  RAR_CONV(Conv2d_1a_3x3, 3, 32, {3, 3}, {2, 2});
  RAR_CONV(Conv2d_2a_3x3, 32, 32, {3, 3});
  RAR_CONV(Conv2d_2b_3x3, 32, 64, {3, 3}, {1, 1}, {1, 1});
  RAR_CONV(Conv2d_3b_1x1, 64, 80, {1, 1});
  RAR_CONV(Conv2d_4a_3x3, 80, 192, {3, 3});
  Mixed_5b = register_module("Mixed_5b", InceptionA(192, 32));
  Mixed_5c = register_module("Mixed_5c", InceptionA(256, 64));
  Mixed_5d = register_module("Mixed_5d", InceptionA(288, 64));
  Mixed_6a = register_module("Mixed_6a", InceptionB(288));
  Mixed_6b = register_module("Mixed_6b", InceptionC(768, 128));
  Mixed_6c = register_module("Mixed_6c", InceptionC(768, 160));
  Mixed_6d = register_module("Mixed_6d", InceptionC(768, 160));
  Mixed_6e = register_module("Mixed_6e", InceptionC(768, 192));
  Mixed_7a = register_module("Mixed_7a", InceptionD(768));
  Mixed_7b = register_module("Mixed_7b", InceptionE(1280, false));
  Mixed_7c = register_module("Mixed_7c", InceptionE(2048, true));
  fc = register_module("fc", torch::nn::Linear(2048, 1008));
}

#undef RAR_CONV

torch::Tensor FidInceptionImpl::pool3(const torch::Tensor& images) {
  auto x = F::interpolate(images, F::InterpolateFuncOptions()
                                      .size(std::vector<int64_t>{299, 299})
                                      .mode(torch::kBilinear)
                                      .align_corners(false));
  x = 2 * x - 1;
  x = max_pool(Conv2d_2b_3x3(Conv2d_2a_3x3(Conv2d_1a_3x3(x))), 2);  // block 0
  x = max_pool(Conv2d_4a_3x3(Conv2d_3b_1x1(x)), 2);                  // block 1
  x = Mixed_6e(Mixed_6d(Mixed_6c(Mixed_6b(Mixed_6a(Mixed_5d(Mixed_5c(Mixed_5b(x))))))));  // block 2
  x = Mixed_7c(Mixed_7b(Mixed_7a(x)));                                                      // block 3
  return x.mean({2, 3});  // adaptive average pool to 1x1
}

torch::Tensor FidInceptionImpl::logits(const torch::Tensor& pool3) { return fc(pool3); }

std::array<torch::Tensor, 2> FidInceptionImpl::pool3_and_mixed6_conv(const torch::Tensor& x299) {
  auto x = max_pool(Conv2d_2b_3x3(Conv2d_2a_3x3(Conv2d_1a_3x3(x299))), 2);  // block 0
  x = max_pool(Conv2d_4a_3x3(Conv2d_3b_1x1(x)), 2);                         // block 1
  x = Mixed_6c(Mixed_6b(Mixed_6a(Mixed_5d(Mixed_5c(Mixed_5b(x))))));
  auto spatial = Mixed_6d->branch1x1(x);  // mixed_6/conv
  x = Mixed_6e(Mixed_6d(x));
  x = Mixed_7c(Mixed_7b(Mixed_7a(x)));
  return {x.mean({2, 3}), spatial};
}

FidInception load_fid_inception(const std::string& path, const torch::Device& device) {
  FidInception net;
  auto sd = io::read_checkpoint(path);
  model::load_into(*net, sd, device, torch::kFloat32);  // strict: every key, exact shapes
  return net;
}

}  // namespace rar::eval
