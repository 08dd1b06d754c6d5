// MaskGIT-VQGAN: exact codes and reconstructions of the reference code, config inference,
// parameter names, and strict loading.
#include <set>

#include <torch/torch.h>

#include "helpers.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/image.h"
#include "model/vqgan.h"
#include "sampling/decode_pipeline.h"
#include "util/device.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;

namespace {
void check_reference_on(const torch::Device& device, bool channels_last = false) {
  torch::NoGradGuard ng;
  auto vq = model::load_vq(shared_ref("tiny_vq.bin"), device);
  vq.model->use_channels_last(channels_last);
  EXPECT_EQ(vq.model->decoder->conv_in->weight.is_contiguous(at::MemoryFormat::ChannelsLast), channels_last);
  auto images = io::read_npy(shared_ref("ref_vq_images.npy"));  // [2,256,256,3] uint8
  auto want_codes = io::read_npy(shared_ref("ref_vq_codes.npy"));
  auto want_recon = io::read_npy(shared_ref("ref_vq_recon.npy"));
  auto x = images.permute({0, 3, 1, 2}).to(device, torch::kFloat32) / 255.0;
  auto codes = vq.model->encode(x).cpu();
  EXPECT_TRUE(codes.equal(want_codes)) << "differing codes: " << codes.ne(want_codes).sum().item<int64_t>();
  auto recon = vq.model->decode(want_codes.to(device));
  if (channels_last) EXPECT_TRUE(recon.is_contiguous(at::MemoryFormat::ChannelsLast));
  recon = recon.cpu().contiguous();
  double err = (recon - want_recon).abs().max().item<double>();
  std::printf("VQ recon max abs error (%s): %.2e\n", device.str().c_str(), err);
  EXPECT_LT(err, 1e-4);
}
}  // namespace

TEST(VQGan, ReproducesReferenceCodesAndReconstructions) {
  check_reference_on(torch::kCPU);
  check_reference_on(torch::kCPU, /*channels_last=*/true);  // NHWC weights and activations: same values
}

TEST(VQGanCuda, ReproducesReferenceOnGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  parse_precision("fp32");
  check_reference_on(torch::kCUDA);
  check_reference_on(torch::kCUDA, /*channels_last=*/true);
}

TEST(VQGan, ConfigInferredAndNamesMatch) {
  auto sd = io::read_checkpoint(shared_ref("tiny_vq.bin"));
  auto c = model::VQConfig::infer(sd);
  EXPECT_EQ(c.base_channels, 32);
  EXPECT_EQ(c.z_channels, 32);
  EXPECT_EQ(c.codebook_size, 1024);
  EXPECT_EQ(c.res_blocks, 2);
  EXPECT_EQ(c.channel_mult, (std::vector<int64_t>{1, 1, 2, 2, 4}));
  EXPECT_EQ(c.image_channels, 3);
  model::VQModel m(c);
  std::set<std::string> ours, theirs(sd.names().begin(), sd.names().end());
  for (auto& p : m->named_parameters()) ours.insert(p.key());
  EXPECT_EQ(ours, theirs);
}

TEST(VQGan, SmallGrayscaleConfigRoundTripsShapes) {
  model::VQConfig c;
  c.image_channels = 1, c.base_channels = 16, c.channel_mult = {1, 2, 2}, c.res_blocks = 1, c.z_channels = 8;
  c.codebook_size = 64, c.norm_groups = 8;
  model::VQModel m(c);
  torch::NoGradGuard ng;
  auto codes = m->encode(torch::rand({2, 1, 32, 32}));
  EXPECT_EQ(codes.sizes(), (std::vector<int64_t>{2, 64}));  // 8x8 tokens
  auto img = m->decode(codes);
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{2, 1, 32, 32}));
  EXPECT_GE(img.min().item<float>(), 0.f);
  EXPECT_LE(img.max().item<float>(), 1.f);
  TempDir dir;
  model::save_vq(dir / "t.safetensors", m);
  auto back = model::load_vq(dir / "t.safetensors");
  EXPECT_EQ(back.cfg.to_json(), c.to_json());
  EXPECT_TRUE(back.model->decode(codes).equal(img));
  EXPECT_RAR_ERROR(m->decode(codes + 64), "code ids must lie in [0, 64)");
  EXPECT_RAR_ERROR(m->encode(torch::rand({1, 3, 32, 32})), "images must be [B,1,H,W]");
  EXPECT_RAR_ERROR(m->encode(torch::rand({1, 1, 30, 30})), "not a multiple of 4");
  EXPECT_RAR_ERROR(model::load_vq(shared_ref("tiny_rar.bin")), "not a VQ tokenizer checkpoint");
}

// The decode pipeline hands back each submitted batch's images, in order, equal to decoding
// directly — on the CPU (decoded at submit) and, where there is one, on a GPU (a side stream).
TEST(VQGan, DecodePipelineReturnsBatchesInOrder) {
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.push_back(torch::kCUDA);
  for (auto dev : devices) {
    torch::NoGradGuard ng;
    auto vq = model::load_vq(shared_ref("tiny_vq.bin"), dev);
    auto codes = io::read_npy(shared_ref("ref_vq_codes.npy")).to(dev);  // [2,256]
    // the second batch (5 images) is decoded in chunks of 2
    std::vector<torch::Tensor> batches = {codes, torch::cat({codes, codes.flip(0), codes.narrow(0, 1, 1)}),
                                          codes.narrow(0, 0, 1)};
    sampling::DecodePipeline pipe(vq.model, 2);
    pipe.submit(batches[0]);
    pipe.submit(batches[1]);
    auto first = pipe.take();
    pipe.submit(batches[2]);
    std::vector<torch::Tensor> got = {first, pipe.take(), pipe.take()};
    EXPECT_TRUE(pipe.empty());
    for (size_t i = 0; i < batches.size(); ++i) {
      // the pipeline's contract: each batch comes back as decoding its chunks of 2 would give (same
      // shapes, so the same convolution algorithms: exact; one big batch may round differently,
      // TF32 convolutions on CUDA by up to two levels)
      std::vector<torch::Tensor> chunks;
      for (const auto& c : batches[i].split(2)) chunks.push_back(io::to_uint8_nhwc(vq.model->decode(c)));
      auto want = torch::cat(chunks).cpu();
      ASSERT_TRUE(got[i].device().is_cpu());
      EXPECT_TRUE(torch::equal(got[i], want)) << dev << " batch " << i;
    }
    EXPECT_RAR_ERROR(pipe.take(), "take() without a submitted batch");
    EXPECT_RAR_ERROR(pipe.submit(codes + 1024), "code ids must lie in [0, 1024)");  // checked once per batch
    EXPECT_TRUE(pipe.empty());
  }
  EXPECT_RAR_ERROR(sampling::DecodePipeline(model::load_vq(shared_ref("tiny_vq.bin"), torch::kCPU).model, 0),
                   "chunk must be > 0");
}
