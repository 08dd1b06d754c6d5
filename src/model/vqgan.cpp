// vqgan.cpp — MaskGIT-VQGAN, following DESIGN §6 line by line.
#include "model/vqgan.h"

#include "model/ops/decoder_ops.h"

#include <cmath>
#include <set>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/parse.h"

namespace rar::model {

namespace F = torch::nn::functional;

// ---------------------------------------------------------------- config

void VQConfig::validate() const {
  check(image_channels > 0 && base_channels > 0 && res_blocks > 0 && z_channels > 0 && codebook_size > 0 &&
            !channel_mult.empty(),
        "tokenizer config: every size must be positive");
  for (int64_t m : channel_mult)
    check(m > 0 && (base_channels * m) % norm_groups == 0, "tokenizer config: ", base_channels * m,
          " channels are not divisible into ", norm_groups, " GroupNorm groups");
}

nlohmann::json VQConfig::to_json() const {
  return {{"num_channels", image_channels}, {"hidden_channels", base_channels}, {"channel_mult", channel_mult},
          {"num_res_blocks", res_blocks},   {"z_channels", z_channels},         {"codebook_size", codebook_size},
          {"norm_groups", norm_groups},     {"dropout", dropout},
          {"use_l2_norm", use_l2_norm}};
}

VQConfig VQConfig::from_json(const nlohmann::json& j) {
  VQConfig c;
  try {
    c.image_channels = j.value("num_channels", c.image_channels);
    c.base_channels = j.value("hidden_channels", c.base_channels);
    c.channel_mult = j.value("channel_mult", c.channel_mult);
    c.res_blocks = j.value("num_res_blocks", c.res_blocks);
    c.z_channels = j.value("z_channels", c.z_channels);
    c.codebook_size = j.value("codebook_size", c.codebook_size);
    c.norm_groups = j.value("norm_groups", c.norm_groups);
    c.dropout = j.value("dropout", c.dropout);
    c.use_l2_norm = j.value("use_l2_norm", c.use_l2_norm);
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer config: ", e.what());
  }
  c.validate();
  return c;
}

bool is_vq_state_dict(const io::StateDict& sd) {
  return sd.has("quantize.embedding.weight") && sd.has("encoder.conv_in.weight") && sd.has("decoder.conv_in.weight");
}

VQConfig VQConfig::infer(const io::StateDict& sd) {
  VQConfig c;
  auto conv_in = sd.sizes("encoder.conv_in.weight", 4);
  c.base_channels = conv_in[0];
  c.image_channels = conv_in[1];
  auto codebook = sd.sizes("quantize.embedding.weight", 2);
  c.codebook_size = codebook[0];
  c.z_channels = codebook[1];
  std::set<int64_t> levels, blocks;
  for (const auto& n : sd.names()) {
    size_t rest = 0;
    const int64_t lv = index_after(n, "encoder.down.", &rest);
    if (lv < 0) continue;
    const int64_t b = index_after(std::string_view(n).substr(rest), "block.");
    if (b < 0) continue;
    levels.insert(lv);
    if (lv == 0) blocks.insert(b);
  }
  check(!levels.empty(), sd.source, ": no encoder.down.* levels");
  c.res_blocks = static_cast<int64_t>(blocks.size());
  c.channel_mult.clear();
  for (int64_t i = 0; i < static_cast<int64_t>(levels.size()); ++i)
    c.channel_mult.push_back(sd.sizes(cat("encoder.down.", i, ".block.0.conv1.weight"), 4)[0] / c.base_channels);
  c.validate();
  return c;
}

// ---------------------------------------------------------------- modules

namespace {
torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, bool bias) {
  // "same" padding: symmetric k/2 for the odd kernels used here (stride 1)
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).padding(k / 2).bias(bias));
}
torch::nn::GroupNorm group_norm(int64_t groups, int64_t ch) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, ch).eps(1e-6));
}
}  // namespace

ResnetBlockImpl::ResnetBlockImpl(int64_t in, int64_t out, int64_t groups, double p) : in_ch(in), out_ch(out) {
  norm1 = register_module("norm1", group_norm(groups, in));
  conv1 = register_module("conv1", conv(in, out, 3, false));
  norm2 = register_module("norm2", group_norm(groups, out));
  dropout = register_module("dropout", torch::nn::Dropout(p));
  conv2 = register_module("conv2", conv(out, out, 3, false));
  if (in != out) nin_shortcut = register_module("nin_shortcut", conv(out, out, 1, false));
}

torch::Tensor ResnetBlockImpl::forward(const torch::Tensor& x) {
  // silu(GroupNorm(.)): model/ops/decoder_ops (one CUDA kernel pair for channels-last inference)
  auto h = conv1(group_norm_silu(norm1, x, path));
  h = conv2(dropout(group_norm_silu(norm2, h, path)));
  return in_ch == out_ch ? h + x : h + nin_shortcut(h);  // the published quirk: shortcut of h
}

DownLevelImpl::DownLevelImpl(const VQConfig& c, int64_t level) : downsample(level != c.levels() - 1) {
  block = register_module("block", torch::nn::ModuleList());
  int64_t in = c.base_channels * (level == 0 ? 1 : c.channel_mult[level - 1]);
  const int64_t out = c.base_channels * c.channel_mult[level];
  for (int64_t j = 0; j < c.res_blocks; ++j, in = out) block->push_back(ResnetBlock(in, out, c.norm_groups, c.dropout));
}

torch::Tensor DownLevelImpl::forward(torch::Tensor x) {
  for (auto& b : *block) x = b->as<ResnetBlock>()->forward(x);
  return downsample ? F::avg_pool2d(x, F::AvgPool2dFuncOptions(2).stride(2)) : x;
}

UpLevelImpl::UpLevelImpl(const VQConfig& c, int64_t level) {
  block = register_module("block", torch::nn::ModuleList());
  int64_t in = c.base_channels * c.channel_mult[std::min(level + 1, c.levels() - 1)];
  const int64_t out = c.base_channels * c.channel_mult[level];
  for (int64_t j = 0; j < c.res_blocks; ++j, in = out) block->push_back(ResnetBlock(in, out, c.norm_groups, c.dropout));
  if (level != 0) upsample_conv = register_module("upsample_conv", conv(out, out, 3, true));
}

torch::Tensor UpLevelImpl::forward(torch::Tensor x) {
  for (auto& b : *block) x = b->as<ResnetBlock>()->forward(x);
  if (upsample_conv) {
    x = upsample_conv(upsample_nearest2x(x, path));
  }
  return x;
}

VQEncoderImpl::VQEncoderImpl(const VQConfig& c) {
  const int64_t top = c.base_channels * c.channel_mult.back();
  conv_in = register_module("conv_in", conv(c.image_channels, c.base_channels, 3, false));
  down = register_module("down", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.levels(); ++i) down->push_back(DownLevel(c, i));
  mid = register_module("mid", torch::nn::ModuleList());
  for (int64_t j = 0; j < c.res_blocks; ++j) mid->push_back(ResnetBlock(top, top, c.norm_groups, c.dropout));
  norm_out = register_module("norm_out", group_norm(c.norm_groups, top));
  conv_out = register_module("conv_out", conv(top, c.z_channels, 1, true));
}

torch::Tensor VQEncoderImpl::forward(const torch::Tensor& images) {
  auto h = conv_in(images);
  for (auto& level : *down) h = level->as<DownLevel>()->forward(h);
  for (auto& b : *mid) h = b->as<ResnetBlock>()->forward(h);
  return conv_out(group_norm_silu(norm_out, h, path));
}

VQDecoderImpl::VQDecoderImpl(const VQConfig& c) {
  const int64_t top = c.base_channels * c.channel_mult.back(), bottom = c.base_channels * c.channel_mult[0];
  conv_in = register_module("conv_in", conv(c.z_channels, top, 3, true));
  mid = register_module("mid", torch::nn::ModuleList());
  for (int64_t j = 0; j < c.res_blocks; ++j) mid->push_back(ResnetBlock(top, top, c.norm_groups, c.dropout));
  up = register_module("up", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.levels(); ++i) up->push_back(UpLevel(c, i));
  norm_out = register_module("norm_out", group_norm(c.norm_groups, bottom));
  conv_out = register_module("conv_out", conv(bottom, c.image_channels, 3, true));
}

torch::Tensor VQDecoderImpl::forward(const torch::Tensor& z) {
  auto h = conv_in(z);
  for (auto& b : *mid) h = b->as<ResnetBlock>()->forward(h);
  for (int64_t i = static_cast<int64_t>(up->size()) - 1; i >= 0; --i) h = up[i]->as<UpLevel>()->forward(h);
  return conv_out(group_norm_silu(norm_out, h, path));
}

torch::Tensor nearest_codes(const torch::Tensor& flat, const torch::Tensor& codebook) {
  auto e = codebook.t();  // [D, K]
  auto dist = torch::addmm(flat.pow(2).sum(1, true) + e.pow(2).sum(0, true), flat, e, /*beta=*/1, /*alpha=*/-2);
  return dist.argmin(1);
}

QuantizerImpl::QuantizerImpl(int64_t codes, int64_t dim, bool l2_norm) : l2(l2_norm) {
  embedding = register_module("embedding", torch::nn::Embedding(codes, dim));
}

torch::Tensor QuantizerImpl::codebook() {
  return l2 ? F::normalize(embedding->weight, F::NormalizeFuncOptions().dim(1)) : embedding->weight;
}

torch::Tensor QuantizerImpl::prepare(const torch::Tensor& z) {
  return l2 ? F::normalize(z, F::NormalizeFuncOptions().dim(1)) : z;
}

torch::Tensor QuantizerImpl::codes_of(const torch::Tensor& z_in) {
  auto z = prepare(z_in);
  const int64_t B = z.size(0), D = z.size(1);
  auto flat = z.permute({0, 2, 3, 1}).reshape({-1, D});  // [B*h*w, D]
  return nearest_codes(flat, codebook()).reshape({B, -1});
}

torch::Tensor QuantizerImpl::vectors_of(const torch::Tensor& codes) {
  torch::Tensor grid = codes;
  if (codes.dim() == 2) {
    auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(codes.size(1)))));
    check(side * side == codes.size(1), "tokenizer: ", codes.size(1), " tokens do not form a square grid");
    grid = codes.view({codes.size(0), side, side});
  }
  check(grid.dim() == 3, "tokenizer: codes must be [B,N] or [B,h,w]");
  return F::embedding(grid, codebook()).permute({0, 3, 1, 2});
}

VQModelImpl::VQModelImpl(const VQConfig& c) : cfg(c) {
  cfg.validate();
  encoder = register_module("encoder", VQEncoder(cfg));
  decoder = register_module("decoder", VQDecoder(cfg));
  quantize = register_module("quantize", Quantizer(cfg.codebook_size, cfg.z_channels, cfg.use_l2_norm));
}

torch::Tensor VQModelImpl::encode(const torch::Tensor& images) {
  check(images.dim() == 4 && images.size(1) == cfg.image_channels, "tokenizer: images must be [B,",
        cfg.image_channels, ",H,W], got ", images.sizes());
  const int64_t f = cfg.downsample_factor();
  check(images.size(2) % f == 0 && images.size(3) % f == 0, "tokenizer: image size ", images.size(2), "x",
        images.size(3), " is not a multiple of ", f);
  return quantize->codes_of(encoder(images));
}

void VQModelImpl::check_codes(const torch::Tensor& codes) const {
  check(codes.numel() == 0 || (codes.min().item<int64_t>() >= 0 && codes.max().item<int64_t>() < cfg.codebook_size),
        "tokenizer: code ids must lie in [0, ", cfg.codebook_size, ")");
}

torch::Tensor VQModelImpl::decode(const torch::Tensor& codes, bool validate) {
  if (validate) check_codes(codes);
  auto z = quantize->vectors_of(codes);
  if (channels_last) z = z.contiguous(at::MemoryFormat::ChannelsLast);
  return decoder(z).clamp(0.0, 1.0);
}

void VQModelImpl::use_path(OpPath p) {
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* b = m->as<ResnetBlockImpl>()) b->path = p;
    if (auto* u = m->as<UpLevelImpl>()) u->path = p;
    if (auto* e = m->as<VQEncoderImpl>()) e->path = p;
    if (auto* d = m->as<VQDecoderImpl>()) d->path = p;
  }
}

void VQModelImpl::use_channels_last(bool on) {
  torch::NoGradGuard no_grad;
  channels_last = on;
  const auto fmt = on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  for (auto& p : parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(fmt));
}

LoadedVQ load_vq(const std::string& path, const torch::Device& device, torch::ScalarType dtype) {
  io::StateDict sd = io::read_checkpoint(path);
  check(is_vq_state_dict(sd), path, ": not a VQ tokenizer checkpoint (no quantize.embedding.weight / ",
        "encoder.conv_in.weight / decoder.conv_in.weight)");
  LoadedVQ v;
  // Our own checkpoints carry the config (GroupNorm groups are not visible in the shapes).
  auto meta = metadata_json(sd, kVQConfigKey);
  v.cfg = meta ? VQConfig::from_json(*meta) : VQConfig::infer(sd);
  v.model = VQModel(v.cfg);
  load_into(*v.model, sd, device, dtype);
  return v;
}

void save_vq(const std::string& path, VQModel& model) {
  io::StateDict sd = state_dict_of(*model);
  sd.metadata[kVQConfigKey] = model->cfg.to_json().dump();
  sd.metadata["format"] = "pt";
  io::write_safetensors(path, sd);
}

}  // namespace rar::model
