// vqgan.h — the MaskGIT-VQGAN tokenizer (DESIGN §6): a convolutional encoder to a grid of z
// vectors, nearest-code quantisation against a codebook, and a decoder back to pixels.
// Module and parameter names are those of the published `maskgit-vqgan-imagenet-f16-256.bin`
// (`encoder.down.{i}.block.{j}.conv1.weight`, `quantize.embedding.weight`, ...).
//
// Shapes: B batch, C image channels, H x W pixels, h x w token grid (H / 2^(levels-1)), D code dim.
#pragma once
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/state_dict.h"
#include "model/ops/fused.h"

namespace rar::model {

struct VQConfig {
  int64_t image_channels = 3;
  int64_t base_channels = 128;
  std::vector<int64_t> channel_mult = {1, 1, 2, 2, 4};
  int64_t res_blocks = 2;
  int64_t z_channels = 256;
  int64_t codebook_size = 1024;
  int64_t norm_groups = 32;
  double dropout = 0.0;
  // l2-normalised codes (ViT-VQGAN): z and the codebook are compared and used on the unit sphere.
  // Off for the published MaskGIT-VQGAN; a trained tokenizer records it in its metadata.
  bool use_l2_norm = false;

  int64_t levels() const { return static_cast<int64_t>(channel_mult.size()); }
  int64_t downsample_factor() const { return int64_t(1) << (levels() - 1); }
  void validate() const;
  nlohmann::json to_json() const;
  static VQConfig from_json(const nlohmann::json& j);
  static VQConfig infer(const io::StateDict& sd);
};

bool is_vq_state_dict(const io::StateDict& sd);

// ResnetBlock(in, out): h = conv2(SiLU(GN2(conv1(SiLU(GN1(x)))))); out = h + x when in == out,
// else h + nin_shortcut(h) — the shortcut is applied to h, as in the published weights.
struct ResnetBlockImpl : torch::nn::Module {
  ResnetBlockImpl(int64_t in, int64_t out, int64_t groups, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  int64_t in_ch, out_ch;
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};
  torch::nn::Dropout dropout{nullptr};
  OpPath path = OpPath::fused;  // the ops' path (VQModelImpl::use_path sets every module's)
};
TORCH_MODULE(ResnetBlock);

// One encoder level: res blocks, then 2x2 average pooling unless it is the last level.
struct DownLevelImpl : torch::nn::Module {
  DownLevelImpl(const VQConfig& c, int64_t level);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::ModuleList block{nullptr};
  bool downsample;
};
TORCH_MODULE(DownLevel);

// One decoder level: res blocks, then nearest 2x upsampling + upsample_conv unless level 0.
struct UpLevelImpl : torch::nn::Module {
  UpLevelImpl(const VQConfig& c, int64_t level);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::ModuleList block{nullptr};
  torch::nn::Conv2d upsample_conv{nullptr};
  OpPath path = OpPath::fused;
};
TORCH_MODULE(UpLevel);

struct VQEncoderImpl : torch::nn::Module {
  explicit VQEncoderImpl(const VQConfig& c);
  torch::Tensor forward(const torch::Tensor& images);  // [B,C,H,W] in [0,1] -> z [B,D,h,w]
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down{nullptr}, mid{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
  OpPath path = OpPath::fused;
};
TORCH_MODULE(VQEncoder);

struct VQDecoderImpl : torch::nn::Module {
  explicit VQDecoderImpl(const VQConfig& c);
  torch::Tensor forward(const torch::Tensor& z);  // [B,D,h,w] -> [B,C,H,W] (not clamped)
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList mid{nullptr}, up{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
  OpPath path = OpPath::fused;
};
TORCH_MODULE(VQDecoder);

// Index of the nearest codebook row for each row of flat [N,D] (codebook [K,D]), by squared L2
// (|z|² + |e|² − 2 z·e). Shared by the quantizer and the tokenizer trainer.
torch::Tensor nearest_codes(const torch::Tensor& flat, const torch::Tensor& codebook);

struct QuantizerImpl : torch::nn::Module {
  QuantizerImpl(int64_t codes, int64_t dim, bool l2 = false);
  // The codebook as used: [K,D], rows l2-normalised when use_l2_norm.
  torch::Tensor codebook();
  // z [B,D,h,w] -> z as compared with the codebook (l2-normalised over D when use_l2_norm).
  torch::Tensor prepare(const torch::Tensor& z);
  // z [B,D,h,w] -> code ids [B,h*w] (row-major), nearest by squared L2 (|z|² + |e|² − 2 z·e).
  torch::Tensor codes_of(const torch::Tensor& z);
  // code ids [B,h*w] (square grid) or [B,h,w] -> code vectors [B,D,h,w].
  torch::Tensor vectors_of(const torch::Tensor& codes);
  torch::nn::Embedding embedding{nullptr};
  bool l2;
};
TORCH_MODULE(Quantizer);

struct VQModelImpl : torch::nn::Module {
  explicit VQModelImpl(const VQConfig& c);
  torch::Tensor encode(const torch::Tensor& images);  // [B,C,H,W] in [0,1] -> [B,h*w] int64
  // Code ids within [0, codebook_size) (a host sync; throws rar::Error otherwise).
  void check_codes(const torch::Tensor& codes) const;
  // (validate = false skips check_codes: for callers that checked already)
  torch::Tensor decode(const torch::Tensor& codes, bool validate = true);   // [B,h*w] -> [B,C,H,W] clamped to [0,1]
  // Channels-last (NHWC) memory for the convolution weights and the decoder's activations: cuDNN's
  // NHWC kernels are the fast ones for bf16 on recent GPUs. Same values; decode's output is then
  // channels-last too (the same [B,C,H,W] tensor, NHWC in memory). Call after moving the model.
  void use_channels_last(bool on);
  bool channels_last = false;
  // The path of every op of the encoder and decoder (model/ops/fused.h; default fused).
  void use_path(OpPath p);
  VQConfig cfg;
  VQEncoder encoder{nullptr};
  VQDecoder decoder{nullptr};
  Quantizer quantize{nullptr};
};
TORCH_MODULE(VQModel);

struct LoadedVQ {
  VQConfig cfg;
  VQModel model{nullptr};
};
constexpr const char* kVQConfigKey = "rar.vq_config";
LoadedVQ load_vq(const std::string& path, const torch::Device& device = torch::kCPU,
                 torch::ScalarType dtype = torch::kFloat32);
void save_vq(const std::string& path, VQModel& model);

}  // namespace rar::model
