// model/ops (block, decode and decoder ops) against the plain LibTorch path. The MLP tail that keeps only fc1's output and
// the dropout mask (every device): values and gradients. The fused CUDA block kernels (CUDA builds
// on a GPU only; the plain path is what every CPU test runs): values and every gradient, in float32
// (tight) and under bf16 autocast (bf16 rounding), and a whole generator's training step with the
// kernels on and off.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include "helpers.h"
#include "model/ops/block_ops.h"
#include "model/ops/decode_ops.h"
#include "model/ops/decoder_ops.h"
#include "model/generator.h"
#include "small_step.h"
#include "util/autocast.h"
#include "util/error.h"
#include "util/gpu.h"

using namespace rar;

namespace {

using test_support::have_kernels;
using test_support::kFused;
using test_support::kPlain;

// max |a - b| / max |b|
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto bf = b.to(torch::kFloat64), af = a.to(torch::kFloat64);
  return (af - bf).abs().max().item<double>() / std::max(bf.abs().max().item<double>(), 1e-30);
}

torch::Tensor leaf(const torch::Tensor& v) { return v.detach().requires_grad_(true); }

// Runs f(path) — the ops on that path; returns its output and the gradients of sum(out * probe)
// with respect to `leaves`.
template <typename F>
std::pair<torch::Tensor, std::vector<torch::Tensor>> run(model::OpPath path, std::vector<torch::Tensor>& leaves, F&& f,
                                                         bool autocast = false) {
  for (auto& l : leaves) l.mutable_grad() = torch::Tensor();
  torch::Tensor out;
  {
    Autocast ac(autocast, torch::kCUDA, torch::kBFloat16);
    out = f(path);
  }
  torch::manual_seed(99);
  auto probe = torch::randn(out.sizes(), out.options().dtype(torch::kFloat32));
  (out.to(torch::kFloat32) * probe).sum().backward();
  std::vector<torch::Tensor> grads;
  for (auto& l : leaves) grads.push_back(l.grad().defined() ? l.grad().clone() : torch::zeros_like(l));
  return {out.detach(), grads};
}

torch::nn::LayerNorm make_ln(int64_t H, bool affine) {
  torch::nn::LayerNorm ln(torch::nn::LayerNormOptions({H}).eps(1e-6).elementwise_affine(affine));
  if (affine) {
    torch::NoGradGuard ng;
    ln->weight.copy_(1 + 0.3 * torch::randn({H}));
    ln->bias.copy_(0.2 * torch::randn({H}));
  }
  ln->to(torch::kCUDA);
  return ln;
}

// A decode step's attention inputs on the GPU: q/k norms (bf16 affine), the qkv projection of one
// position for B rows, random caches [B,heads,cap,hd] in the cache dtype, the slot and its mask.
struct DecodeInputs {
  torch::nn::LayerNorm qn{nullptr}, kn{nullptr};
  torch::Tensor qkv, k0, v0, slot, valid;
  DecodeInputs(int64_t B, int64_t heads, int64_t hd, int64_t cap, int64_t last, at::ScalarType ct, uint64_t seed) {
    auto cu = torch::TensorOptions().device(torch::kCUDA);
    torch::manual_seed(seed);
    qn = make_ln(hd, true), kn = make_ln(hd, true);
    qn->to(torch::kBFloat16), kn->to(torch::kBFloat16);
    qkv = (2 * torch::randn({B, 1, 3 * heads * hd}, cu)).to(torch::kBFloat16);
    k0 = model::to_cache_dtype(torch::randn({B, heads, cap, hd}, cu), ct);
    v0 = model::to_cache_dtype(torch::randn({B, heads, cap, hd}, cu), ct);
    slot = torch::full({1}, last, cu.dtype(torch::kInt64));
    valid = torch::arange(cap, cu.dtype(torch::kInt64)).le(slot).view({1, 1, 1, -1});
  }
};
torch::Tensor bytes_of(const torch::Tensor& t) { return t.view(torch::kUInt8); }

}  // namespace

// The op against the plain composition with the same mask. On CUDA (when there) the op runs the
// fused GELU-dropout kernels with a bit-packed mask where the width allows (40: u has 8k elements)
// and the LibTorch recomputation elsewhere (41).
TEST(FusedOps, GeluDropoutLinearRecomputesWhatThePlainPathKeeps) {
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.push_back(torch::kCUDA);
  for (auto dev : devices)
  for (int64_t width : {40, 41})
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    for (bool dropout : {false, true}) {
      torch::manual_seed(3);
      const double p = 0.25;
      auto u0 = (2 * torch::randn({3, 7, width})).to(dt).to(dev);
      auto w0 = (0.1 * torch::randn({24, width})).to(dev), b0 = (0.1 * torch::randn({24})).to(dev);
      auto mask = dropout ? torch::rand({3, 7, width}).gt(p).to(dev) : torch::Tensor();
      auto bits = dropout ? model::pack_bits(mask) : torch::Tensor();
      auto probe = torch::randn({3, 7, 24}).to(dev);
      auto run = [&](bool saving) {
        auto u = leaf(u0), w = leaf(w0), b = leaf(b0);
        auto y = saving ? model::gelu_dropout_linear_saving(u, bits, p, w, b, kFused)
                        : model::gelu_dropout_linear_plain(u, bits, p, w, b);
        (y.to(torch::kFloat32) * probe).sum().backward();
        return std::vector<torch::Tensor>{y.detach(), u.grad(), w.grad(), b.grad()};
      };
      auto plain = run(false), saving = run(true);
      ASSERT_EQ(saving[0].scalar_type(), dt);
      const double tol = dt == torch::kFloat32 ? (dev.is_cuda() ? 1e-5 : 1e-6) : 1.5e-2;
      for (size_t i = 0; i < plain.size(); ++i)
        EXPECT_LT(rel_err(saving[i], plain[i]), tol)
            << dev << " width " << width << " dtype " << dt << " dropout " << dropout << " item " << i;
      if (dropout) {  // dropped units carry no gradient
        EXPECT_EQ(saving[1].masked_select(mask.logical_not()).abs().max().item<double>(), 0.0);
      }
    }
  }
}

// The whole MLP recomputing fc1's output in backward against keeping it (fc1 through the linear op,
// then the tail op), the same mask: the same output, and the same gradients — bit for bit on CUDA
// under bf16 autocast (the fused path runs the very same products and kernels), to the products'
// summation order in float32. Widths with (40) and without (41) the fused GELU kernel.
TEST(FusedOps, MlpRecomputingEqualsKeepingFc1Output) {
  std::vector<std::pair<torch::Device, bool>> cases = {{torch::kCPU, false}};
  if (torch::cuda::is_available()) cases.insert(cases.end(), {{torch::kCUDA, false}, {torch::kCUDA, true}});
  for (auto [dev, autocast] : cases)
  for (int64_t width : {40, 41})
  for (bool dropout : {false, true}) {
    torch::manual_seed(5);
    const double p = 0.25;
    const int64_t H = 16;
    torch::nn::Linear fc1(H, width), fc2(width, 24);
    fc1->to(dev), fc2->to(dev);
    auto x0 = (2 * torch::randn({3, 7, H})).to(dev).to(autocast ? torch::kBFloat16 : torch::kFloat32);
    auto mask = dropout ? torch::rand({3, 7, width}).gt(p).to(dev) : torch::Tensor();
    auto bits = dropout ? model::pack_bits(mask) : torch::Tensor();
    auto probe = torch::randn({3, 7, 24}).to(dev);
    auto run = [&](bool recompute) {
      auto x = leaf(x0);
      for (auto& q : {fc1->weight, fc1->bias, fc2->weight, fc2->bias}) q.mutable_grad() = torch::Tensor();
      torch::Tensor y;
      {
        Autocast ac(autocast, torch::kCUDA, torch::kBFloat16);
        y = recompute ? model::mlp_recomputing_masked(x, bits, p, *fc1, *fc2, kFused)
                      : model::gelu_dropout_linear_saving(model::linear(*fc1, x, kFused), bits, p, fc2->weight,
                                                          fc2->bias, kFused);
      }
      (y.to(torch::kFloat32) * probe).sum().backward();
      return std::vector<torch::Tensor>{y.detach(),          x.grad(),           fc1->weight.grad().clone(),
                                        fc1->bias.grad().clone(), fc2->weight.grad().clone(), fc2->bias.grad().clone()};
    };
    auto kept = run(false), recomputed = run(true);
    const std::string what = c10::str(dev, " autocast ", autocast, " width ", width, " dropout ", dropout);
    EXPECT_TRUE(torch::equal(recomputed[0], kept[0])) << what;
    for (size_t i = 1; i < kept.size(); ++i) {
      ASSERT_EQ(recomputed[i].scalar_type(), kept[i].scalar_type()) << what << " item " << i;
      if (autocast) EXPECT_TRUE(torch::equal(recomputed[i], kept[i])) << what << " item " << i;
      else EXPECT_LT(rel_err(recomputed[i], kept[i]), dev.is_cuda() ? 1e-5 : 1e-6) << what << " item " << i;
    }
    if (dropout) EXPECT_GT(kept[3].abs().max().item<double>(), 0.0);
  }
}

// Dropout masks as bits: packing round-trips (lengths not a multiple of 8 included), a drawn mask
// keeps 1 - p of the elements, follows the default generator's state (a recomputed block draws
// its mask again) and leaves the bits past n clear; p = 0 draws nothing.
TEST(FusedOps, DropoutBitsPackDrawAndFollowTheGenerator) {
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.push_back(torch::kCUDA);
  for (auto dev : devices) {
    torch::manual_seed(4);
    for (int64_t n : {1, 13, 64, 1001}) {
      auto mask = torch::rand({n}).lt(0.6).to(dev);
      auto bits = model::pack_bits(mask);
      ASSERT_EQ(bits.numel(), (n + 7) / 8);
      EXPECT_TRUE(torch::equal(model::unpack_bits(bits, {n}), mask)) << dev << " n " << n;
    }
    EXPECT_FALSE(model::dropout_bits(100, 0.0, dev, kFused).defined());
    const int64_t n = 200003;  // not a multiple of 8
    const double p = 0.1;
    torch::manual_seed(11);
    if (dev.is_cuda()) torch::cuda::manual_seed_all(11);
    auto a = model::dropout_bits(n, p, dev, kFused);
    auto b = model::dropout_bits(n, p, dev, kFused);
    torch::manual_seed(11);
    if (dev.is_cuda()) torch::cuda::manual_seed_all(11);
    auto a2 = model::dropout_bits(n, p, dev, kFused);
    ASSERT_EQ(a.numel(), (n + 7) / 8);
    EXPECT_TRUE(torch::equal(a, a2)) << dev << ": the same generator state draws the same mask";
    EXPECT_FALSE(torch::equal(a, b)) << dev << ": the next draw is another mask";
    const double kept = model::unpack_bits(a, {n}).sum().item<double>() / n;
    EXPECT_NEAR(kept, 1 - p, 4 * std::sqrt(p * (1 - p) / n)) << dev;
    EXPECT_EQ(a[a.numel() - 1].item<int64_t>() >> (n % 8), 0) << dev << ": bits past n are clear";
  }
}

// The gated residual with dropout on its branch, on the plain path (every device): dropped
// elements leave the residual as it was, kept ones add gate · y / (1 - p).
TEST(FusedOps, GatedResidualDropsTheBranch) {
  torch::manual_seed(6);
  const double p = 0.25;
  auto x = torch::randn({2, 5, 16}), gate = torch::randn({2, 5, 16}), y = torch::randn({2, 5, 16});
  auto mask = torch::rand({2, 5, 16}).ge(p);
  auto out = model::gated_residual_masked(x, gate, y, model::pack_bits(mask), p, kPlain);
  auto expect = torch::where(mask, x + gate * y / (1 - p), x);
  EXPECT_LT(rel_err(out, expect), 1e-6);
  EXPECT_TRUE(torch::equal(model::gated_residual_masked(x, gate, y, torch::Tensor(), p, kPlain), torch::addcmul(x, gate, y)));
}

// Uses of one shared bf16 copy send their gradients back in float32: two uses with gradients 1 and
// 2^-9 add up to 1 + 2^-9 (in bf16, with 8 significant bits, the small one would vanish).
TEST(FusedOps, SharedCastGradientsAddUpInFloat32) {
  auto src = torch::full({4}, 0.5).requires_grad_(true);
  auto cast = src.detach().to(torch::kBFloat16);
  auto a = model::shared_cast(src, cast), b = model::shared_cast(src, cast);
  EXPECT_EQ(a.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(a.is_alias_of(cast));  // no copy per use
  (a.to(torch::kFloat32).sum() + std::ldexp(1.0, -9) * b.to(torch::kFloat32).sum()).backward();
  ASSERT_EQ(src.grad().scalar_type(), torch::kFloat32);
  EXPECT_EQ(src.grad()[0].item<double>(), 1.0 + std::ldexp(1.0, -9));
  {
    torch::NoGradGuard ng;
    EXPECT_TRUE(model::shared_cast(src, cast).is_same(cast));
  }
}

// In training the adaLN projection is two matmuls (shift rows, the others); values and gradients
// equal the single product's chunks, and the shifts no longer share the kept chunks' storage.
TEST(FusedOps, AdalnSplitEqualsOneProjection) {
  torch::manual_seed(5);
  const int64_t H = 12;
  torch::nn::Linear lin(H, 6 * H);
  auto c0 = torch::randn({2, 5, H});
  auto probe = torch::randn({6, 2, 5, H});
  auto run = [&](bool split) {
    lin->zero_grad();
    auto c = leaf(c0);
    std::array<torch::Tensor, 6> m;
    if (split) m = model::adaln_split6(*lin, c, /*training=*/true, kFused);  // (a CPU tensor: the plain path)
    else {
      auto v = at::linear(c, lin->weight, lin->bias).chunk(6, -1);
      std::copy(v.begin(), v.end(), m.begin());
    }
    auto all = torch::stack(std::vector<torch::Tensor>(m.begin(), m.end()));
    (all * probe).sum().backward();
    return std::make_tuple(all.detach(), c.grad(), lin->weight.grad().clone(), lin->bias.grad().clone(), m);
  };
  auto [y1, gc1, gw1, gb1, m1] = run(false);
  auto [y2, gc2, gw2, gb2, m2] = run(true);
  EXPECT_LT(rel_err(y2, y1), 1e-6);
  EXPECT_LT(rel_err(gc2, gc1), 1e-6);
  EXPECT_LT(rel_err(gw2, gw1), 1e-6);
  EXPECT_LT(rel_err(gb2, gb1), 1e-6);
  EXPECT_TRUE(m1[0].is_alias_of(m1[1]));
  EXPECT_FALSE(m2[0].is_alias_of(m2[1]));  // shift_a apart from scale_a
  EXPECT_FALSE(m2[3].is_alias_of(m2[5]));  // shift_m apart from gate_m
  EXPECT_TRUE(m2[1].is_alias_of(m2[5]));   // scales and gates in one product
}

// The bias gradients' column-sum kernel against float64 sums: widths of one partial warp (200) up to
// 1024 threads (8192), a few rows and more rows than the grid walks at once (one and two rows per
// iteration and the tail), the same bits on a second call; what it does not take (a width that is
// not a multiple of 8, float32) goes through ATen's sum.
TEST(FusedOpsCuda, BiasGradientColumnSumsMatchFloat64) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  torch::manual_seed(7);
  for (int64_t N : {200, 1280, 3840, 5120, 8192, 12})
  for (int64_t rows : {1, 7, 531, 16512}) {
    auto g = (1 + torch::randn({rows, N}, cu)).to(torch::kBFloat16);
    auto got = model::bias_gradient(g, kFused);
    auto again = model::bias_gradient(g, kFused);
    auto g64 = g.to(torch::kFloat64);
    auto want = g64.sum(0);
    const std::string what = "N " + std::to_string(N) + " rows " + std::to_string(rows);
    ASSERT_EQ(got.scalar_type(), torch::kFloat32) << what;
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    // float32 summation error against the sum of magnitudes, column by column
    const double err = ((got.to(torch::kFloat64) - want).abs() / g64.abs().sum(0)).max().item<double>();
    EXPECT_LT(err, 1e-5) << what;
    EXPECT_TRUE(torch::equal(got, again)) << what;
  }
  auto f32 = torch::randn({9, 64}, cu);
  EXPECT_LT(rel_err(model::bias_gradient(f32, kFused), f32.sum(0)), 1e-6);
}

// The fused adaLN products of a bf16 training step: the same six values as the plain path's, the
// weight and bias gradients in float32 and in W's row order — the exact sums to float32 rounding
// (float64 reference), where the plain path's weight gradient went through bf16.
TEST(FusedOpsCuda, AdalnSplitWritesFloat32ParameterGradients) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  torch::manual_seed(6);
  const int64_t H = 64, B = 3, N = 41;
  torch::nn::Linear lin(H, 6 * H);
  lin->to(torch::kCUDA);
  std::vector<torch::Tensor> leaves = {leaf(torch::randn({B, N, H}, cu.dtype(torch::kBFloat16))), lin->weight,
                                       lin->bias};
  auto f = [&](model::OpPath path) {
    auto m = model::adaln_split6(*lin, leaves[0], /*training=*/true, path);
    return torch::stack(std::vector<torch::Tensor>(m.begin(), m.end()));
  };
  auto [yp, gp] = run(kPlain, leaves, f, /*autocast=*/true);
  auto [yf, gf] = run(kFused, leaves, f, /*autocast=*/true);
  EXPECT_TRUE(torch::equal(yf, yp));
  EXPECT_LT(rel_err(gf[0], gp[0]), 1e-2);
  EXPECT_LT(rel_err(gf[1], gp[1]), 1e-2);
  EXPECT_LT(rel_err(gf[2], gp[2]), 1e-2);
  EXPECT_EQ(gf[1].scalar_type(), torch::kFloat32);
  // float64 sums: output chunk i's gradient (run()'s probe, in bf16 as the step sees it) times x
  torch::manual_seed(99);
  auto probe = torch::randn({6, B, N, H}, cu).to(torch::kBFloat16).to(torch::kFloat64).reshape({6, -1, H});
  auto x = leaves[0].detach().reshape({-1, H}).to(torch::kFloat64);
  std::vector<torch::Tensor> rows, bias;
  for (int64_t i = 0; i < 6; ++i) rows.push_back(probe[i].t().mm(x)), bias.push_back(probe[i].sum(0));
  const auto gw = torch::cat(rows), gb = torch::cat(bias);
  EXPECT_LT(rel_err(gf[1], gw), 1e-5);
  EXPECT_GT(rel_err(gp[1], gw), rel_err(gf[1], gw));
  EXPECT_LT(rel_err(gf[2], gb), 1e-5);
}

// Masks drawn inside a captured step are new at every replay and are the very masks eager draws
// from the same generator state would be (the capture reads the Philox seed and offset at replay;
// StepGraphOptions::rng_unchanged undoes the eager run before the capture).
TEST(FusedOpsCuda, DropoutBitsInACapturedStepFollowTheEagerDraws) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  const int64_t n = 300007;
  const double p = 0.1;
  const torch::Device cu(torch::kCUDA);
  torch::cuda::manual_seed_all(5);
  auto e1 = model::dropout_bits(n, p, cu, kFused), e2 = model::dropout_bits(n, p, cu, kFused);
  torch::cuda::manual_seed_all(5);
  gpu::StepGraph graph([&] { return model::dropout_bits(n, p, cu, kFused); }, gpu::StepGraphOptions{true, false});
  auto r1 = graph.replay().clone();
  auto r2 = graph.replay().clone();
  EXPECT_TRUE(torch::equal(r1, e1));
  EXPECT_TRUE(torch::equal(r2, e2));
  EXPECT_FALSE(torch::equal(r1, r2));
}

TEST(FusedOpsCuda, LnModulateMatchesPlainPath) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  const int64_t B = 3, N = 37;
  // H = 200, 1280: the block-per-row kernel (H % 8 == 0; 200: masked lanes, 1280: five warps);
  // H = 196: the four-wide warp-per-row kernels; H = 202: the per-element kernels
  for (int64_t H : {200, 1280, 196, 202})
  for (bool affine : {true, false}) {
    for (bool autocast : {false, true}) {
      torch::manual_seed(1);
      auto ln = make_ln(H, affine);
      auto cu = torch::TensorOptions().device(torch::kCUDA);
      // m stands for the adaLN projection [B,N,6H]: bf16 under autocast (the matmul's output)
      std::vector<torch::Tensor> leaves = {
          leaf(2 + 3 * torch::randn({B, N, H}, cu)),
          leaf(0.5 * torch::randn({B, N, 6 * H}, cu.dtype(autocast ? torch::kBFloat16 : torch::kFloat32)))};
      if (affine) leaves.insert(leaves.end(), {ln->weight, ln->bias});
      auto f = [&](model::OpPath path) {
        auto m = leaves[1].chunk(6, -1);
        return model::ln_modulate(ln, leaves[0], m[3], m[4], path);
      };
      auto [yp, gp] = run(kPlain, leaves, f, autocast);
      auto [yf, gf] = run(kFused, leaves, f, autocast);
      ASSERT_EQ(yf.scalar_type(), yp.scalar_type());
      const double tol = autocast ? 1.5e-2 : 2e-5;
      EXPECT_LT(rel_err(yf, yp), tol) << "H " << H << " affine " << affine << " autocast " << autocast;
      for (size_t i = 0; i < gp.size(); ++i)
        EXPECT_LT(rel_err(gf[i], gp[i]), autocast ? 3e-2 : 1e-4)
            << "grad " << i << " H " << H << " affine " << affine << " autocast " << autocast;
      // the other chunks of m get no gradient
      EXPECT_EQ(gf[1].chunk(6, -1)[0].abs().max().item<double>(), 0.0);
    }
  }
}

// ln_modulate_branch's fused op sums the residual stream's two gradients inside the norm's backward
// kernel: against the same kernels taken apart (autograd adding the gated residual's gradient of x
// to the norm's), every output and gradient bit for bit — for each backward kernel (H as above),
// float32 and under bf16 autocast. At the block's shape (1280 wide, more rows than blocks) too.
TEST(FusedOpsCuda, LnModulateBranchSumsTheResidualGradientBitForBit) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  for (auto [B, N, H] : std::vector<std::array<int64_t, 3>>{{3, 37, 200}, {3, 37, 196}, {3, 37, 202}, {8, 257, 1280}})
  for (bool autocast : {false, true}) {
    torch::manual_seed(4);
    auto ln = make_ln(H, true);
    auto cu = torch::TensorOptions().device(torch::kCUDA);
    std::vector<torch::Tensor> leaves = {
        leaf(2 + 3 * torch::randn({B, N, H}, cu)),
        leaf(0.5 * torch::randn({B, N, 6 * H}, cu.dtype(autocast ? torch::kBFloat16 : torch::kFloat32))),
        ln->weight, ln->bias};
    bool took_branch_op = false;
    auto block_half = [&](bool branch) {
      auto m = leaves[1].chunk(6, -1);
      torch::Tensor h = leaves[0], n;
      if (branch) {
        auto r = model::ln_modulate_branch(ln, leaves[0], m[3], m[4], kFused);
        h = r[0], n = r[1];
        took_branch_op = n.grad_fn() && n.grad_fn()->name().find("LnModulateBranch") != std::string::npos;
      } else {
        n = model::ln_modulate(ln, leaves[0], m[3], m[4], kFused);
      }
      return model::gated_residual_masked(h, m[2], n * 1.5, torch::Tensor(), 0.0, kFused);
    };
    auto [ya, ga] = run(kFused, leaves, [&](model::OpPath) { return block_half(false); }, autocast);
    auto [yb, gb] = run(kFused, leaves, [&](model::OpPath) { return block_half(true); }, autocast);
    const std::string what = "H " + std::to_string(H) + " autocast " + std::to_string(autocast);
    EXPECT_TRUE(took_branch_op) << what;
    EXPECT_TRUE(torch::equal(ya, yb)) << what;
    for (size_t i = 0; i < ga.size(); ++i) EXPECT_TRUE(torch::equal(ga[i], gb[i])) << "grad " << i << " " << what;
    EXPECT_GT(ga[0].abs().max().item<double>(), 0.0);
  }
}

// rar_xl's widths at more positions than the backward kernels have blocks (2056 > 1056): each block
// walks several rows (the shared sums alternate between two buffers), and its partial sums of the
// affine gradients cover them all.
TEST(FusedOpsCuda, NormBackwardsWalkingManyRowsMatchPlainPath) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  const int64_t B = 8, N = 257, H = 1280, heads = 16;
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  torch::manual_seed(3);
  auto ln = make_ln(H, true);
  std::vector<torch::Tensor> leaves = {leaf(2 + 3 * torch::randn({B, N, H}, cu)),
                                       leaf(0.5 * torch::randn({B, N, 6 * H}, cu.dtype(torch::kBFloat16))),
                                       ln->weight, ln->bias};
  auto f = [&](model::OpPath path) {
    auto m = leaves[1].chunk(6, -1);
    return model::ln_modulate(ln, leaves[0], m[3], m[4], path);
  };
  auto [yp, gp] = run(kPlain, leaves, f, true);
  auto [yf, gf] = run(kFused, leaves, f, true);
  EXPECT_LT(rel_err(yf, yp), 1.5e-2);
  for (size_t i = 0; i < gp.size(); ++i) EXPECT_LT(rel_err(gf[i], gp[i]), 3e-2) << "ln grad " << i;

  auto qn = make_ln(H / heads, true), kn = make_ln(H / heads, true);
  std::vector<torch::Tensor> ql = {leaf(2 * torch::randn({B, N, 3 * H}, cu.dtype(torch::kBFloat16))), qn->weight,
                                   qn->bias, kn->weight, kn->bias};
  auto g = [&](model::OpPath path) {
    auto [q, k, v] = model::qk_norm_split(ql[0], heads, qn, kn, path);
    return torch::stack({q, k, v});
  };
  auto [op, gqp] = run(kPlain, ql, g);
  auto [of, gqf] = run(kFused, ql, g);
  EXPECT_LT(rel_err(of, op), 1e-2);
  for (size_t i = 0; i < gqp.size(); ++i) EXPECT_LT(rel_err(gqf[i], gqp[i]), 3e-2) << "qk grad " << i;
}

TEST(FusedOpsCuda, GatedResidualAndQkNormMatchPlainPath) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  const int64_t B = 2, N = 19;
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  // (H, heads): the vectorised q/k kernels with hd = 32 (4 lanes a row), 48 (6 of 8 lanes, rar_b's)
  // and 80 (10 of 16, rar_xl's); (102, 3) the per-element ones (hd = 34, and H % 4 != 0 for the gate)
  for (auto [H, heads] : {std::pair<int64_t, int64_t>{96, 3}, std::pair<int64_t, int64_t>{144, 3},
                          std::pair<int64_t, int64_t>{240, 3}, std::pair<int64_t, int64_t>{102, 3}})
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    torch::manual_seed(2);
    std::vector<torch::Tensor> leaves = {leaf(torch::randn({B, N, H}, cu)), leaf(torch::randn({B, N, 6 * H}, cu.dtype(dt))),
                                         leaf(torch::randn({B, N, H}, cu.dtype(dt)))};
    // without dropout, and with a mask (bits) on the branch: the fused kernels round as the plain
    // path does (dropout's output in y's dtype, the branch's gradient before dropout's), so the
    // results agree to float rounding of the products alone
    for (bool dropout : {false, true}) {
      const double p = 0.3;
      const auto bits = dropout ? model::pack_bits(torch::rand({B, N, H}, cu).ge(p)) : torch::Tensor();
      auto f = [&](model::OpPath path) {
        return model::gated_residual_masked(leaves[0], leaves[1].chunk(6, -1)[2], leaves[2], bits, p, path);
      };
      auto [yp, gp] = run(kPlain, leaves, f);
      auto [yf, gf] = run(kFused, leaves, f);
      EXPECT_LT(rel_err(yf, yp), 1e-6) << H << " dropout " << dropout;
      for (size_t i = 0; i < gp.size(); ++i)
        EXPECT_LT(rel_err(gf[i], gp[i]), dt == torch::kFloat32 ? 1e-6 : 8e-3) << i << " dropout " << dropout;
      if (dropout) {  // a dropped element's branch gets no gradient
        const auto dropped = model::unpack_bits(bits, {B, N, H}).logical_not();
        EXPECT_EQ(gf[2].masked_select(dropped).abs().max().item<double>(), 0.0);
      }
    }

    auto qn = make_ln(H / heads, true), kn = make_ln(H / heads, true);
    std::vector<torch::Tensor> ql = {leaf(2 * torch::randn({B, N, 3 * H}, cu.dtype(dt))), qn->weight, qn->bias,
                                     kn->weight, kn->bias};
    for (int part = 0; part < 3; ++part) {
      auto g = [&](model::OpPath path) { return model::qk_norm_split(ql[0], heads, qn, kn, path)[part]; };
      auto [op, gqp] = run(kPlain, ql, g);
      auto [of, gqf] = run(kFused, ql, g);
      ASSERT_EQ(of.sizes(), op.sizes());
      EXPECT_LT(rel_err(of, op), dt == torch::kFloat32 ? 1e-5 : 1e-2) << "part " << part;
      for (size_t i = 0; i < gqp.size(); ++i)
        EXPECT_LT(rel_err(gqf[i], gqp[i]), dt == torch::kFloat32 ? 1e-4 : 3e-2) << "part " << part << " grad " << i;
    }
  }
}

// The block's products under bf16 autocast: the fused path gives the very forward of at::linear and
// parameter gradients in float32 straight from the product (the plain path's weight gradient is
// rounded to bf16 first), contiguous, as AdamW reads them.
TEST(FusedOpsCuda, LinearWritesFloat32ParameterGradients) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  torch::manual_seed(4);
  torch::nn::Linear lin(96, 200);
  lin->to(torch::kCUDA);
  std::vector<torch::Tensor> leaves = {leaf(torch::randn({3, 41, 96}, cu.dtype(torch::kBFloat16))), lin->weight,
                                       lin->bias};
  auto f = [&](model::OpPath path) { return model::linear(*lin, leaves[0], path); };
  auto [yp, gp] = run(kPlain, leaves, f, /*autocast=*/true);
  auto [yf, gf] = run(kFused, leaves, f, /*autocast=*/true);
  EXPECT_TRUE(torch::equal(yf, yp));
  EXPECT_LT(rel_err(gf[0], gp[0]), 1e-2);  // the same product, perhaps another kernel
  EXPECT_LT(rel_err(gf[1], gp[1]), 1e-2);  // plain: rounded to bf16
  EXPECT_LT(rel_err(gf[2], gp[2]), 1e-2);
  // against float64 sums: the fused weight gradient is the exact one to float32 rounding
  torch::manual_seed(99);
  auto probe = torch::randn({3, 41, 200}, cu).to(torch::kFloat64).reshape({-1, 200});
  // (run()'s probe is the gradient of the output; in bf16 as the step sees it)
  auto g = probe.to(torch::kFloat32).to(torch::kBFloat16).to(torch::kFloat64);
  auto gw = g.t().mm(leaves[0].detach().reshape({-1, 96}).to(torch::kFloat64));
  EXPECT_LT(rel_err(gf[1], gw), 1e-5);
  EXPECT_GT(rel_err(gp[1], gw), rel_err(gf[1], gw));
  EXPECT_EQ(gf[1].scalar_type(), torch::kFloat32);
  // no gradient: the plain op (nothing to save)
  torch::NoGradGuard ng;
  Autocast ac(true, torch::kCUDA, torch::kBFloat16);
  EXPECT_TRUE(torch::equal(model::linear(*lin, leaves[0], kFused), yp));
}

TEST(FusedOpsCuda, GeneratorTrainingStepMatchesPlainPath) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  auto s = test_support::small_cuda_step(160, 5);
  const bool tf32 = at::globalContext().allowTF32CuBLAS();
  at::globalContext().setAllowTF32CuBLAS(false);
  auto step = [&](bool fused, bool autocast) {
    s.g->use_path(fused ? kFused : kPlain);
    auto r = s.step(autocast);
    s.g->use_path(kFused);
    return r;
  };
  auto [lp, gp] = step(false, false);
  auto [lf, gf] = step(true, false);
  EXPECT_NEAR(lf, lp, 1e-5 * lp);
  EXPECT_LT(rel_err(gf, gp), 1e-4);
  auto [lpb, gpb] = step(false, true);
  auto [lfb, gfb] = step(true, true);
  EXPECT_NEAR(lfb, lpb, 1e-2 * lpb);
  const double cos = (gfb * gpb).sum().item<double>() / (gfb.norm() * gpb.norm()).item<double>();
  EXPECT_GT(cos, 0.999);
  at::globalContext().setAllowTF32CuBLAS(tf32);
}

// The decode attention kernel (one query per row, the valid-slot count read from the device) against
// the masked scaled_dot_product_attention of the plain path, float32, bf16 and bf16 over fp8 caches:
// head dims of rar_b, rar_l, rar_xl and more, one valid slot, a few, all of them, past a score tile;
// slots past the last valid one hold garbage it must not read.
TEST(FusedOpsCuda, DecodeAttentionMatchesMaskedAttention) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  const int64_t B = 5, heads = 3;
  // (cap, last): one valid slot, a few, all; and past one 256-key score tile (rar's 257 slots)
  const std::vector<std::pair<int64_t, int64_t>> fills = {{37, 0}, {37, 5}, {37, 36}, {300, 256}, {300, 299}};
  // (q dtype, cache dtype): float32, bf16, and bf16 queries over fp8 caches (`--kv-cache fp8`)
  const std::vector<std::pair<at::ScalarType, at::ScalarType>> types = {
      {torch::kFloat32, torch::kFloat32}, {torch::kBFloat16, torch::kBFloat16}, {torch::kBFloat16, torch::kFloat8_e4m3fn}};
  // both kernels: block (every case) and warp (bf16 queries, hd 48/64/80/88/128; else block)
  for (std::string kernel : {"block", "warp"})
  for (int64_t hd : {48, 64, 80, 88, 128, 256})
  for (auto [dt, ct] : types)
  for (auto [cap, last] : fills) {
    const auto chosen = model::parse_attention_kernel(kernel);
    torch::manual_seed(4);
    auto q = torch::randn({B, 1, heads, hd}, cu.dtype(dt)).transpose(1, 2);  // the layout qk_norm_split gives
    auto k = torch::randn({B, heads, cap, hd}, cu), v = torch::randn({B, heads, cap, hd}, cu);
    if (last + 1 < cap) {  // garbage beyond the valid slots
      k.narrow(2, last + 1, cap - last - 1).fill_(1e4);
      v.narrow(2, last + 1, cap - last - 1).fill_(-1e4);
    }
    k = model::to_cache_dtype(k, ct), v = model::to_cache_dtype(v, ct);
    auto slot = torch::full({1}, last, cu.dtype(torch::kInt64));
    auto valid = torch::arange(cap, cu.dtype(torch::kInt64)).le(slot).view({1, 1, 1, -1});
    auto plain = model::decode_attention(q, k, v, slot, valid, kPlain, chosen);
    auto fused = model::decode_attention(q, k, v, slot, valid, kFused, chosen);
    ASSERT_EQ(fused.sizes(), plain.sizes());
    // reference in float64 over the valid slots
    auto kv = k.narrow(2, 0, last + 1).to(torch::kFloat64), vv = v.narrow(2, 0, last + 1).to(torch::kFloat64);
    auto p = (q.to(torch::kFloat64).matmul(kv.transpose(-1, -2)) / std::sqrt(double(hd))).softmax(-1);
    auto ref = p.matmul(vv).transpose(1, 2).reshape({B, 1, heads * hd});
    const double tol = dt == torch::kFloat32 ? 1e-5 : 2e-2;
    EXPECT_LT(rel_err(fused, ref), tol) << kernel << " kernel, hd " << hd << " dtype " << dt << " cache " << ct
                                        << " last " << last;
    EXPECT_LT(rel_err(plain, ref), tol) << "plain, hd " << hd << " dtype " << dt << " cache " << ct << " last " << last;
  }
  EXPECT_RAR_ERROR(model::parse_attention_kernel("tiles"), "expected block, warp, split or auto, got 'tiles'");
}

// bf16 inference (a bf16 model: bf16 LayerNorm weights, bf16 residual stream) takes the fused
// kernels too; its logits stay within bf16 rounding of the plain path's.
TEST(FusedOpsCuda, Bf16ModelForwardMatchesPlainPath) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  auto s = test_support::small_cuda_step(144, 3);  // hd 48, as rar_b
  s.g->eval();
  s.g->to(torch::kBFloat16);
  torch::NoGradGuard ng;
  auto cond = s.g->condition_tokens(s.labels);
  s.g->use_path(kPlain);
  auto plain = s.g->forward(s.tokens, cond).to(torch::kFloat32);
  s.g->use_path(kFused);
  auto fused = s.g->forward(s.tokens, cond).to(torch::kFloat32);
  EXPECT_LT(rel_err(fused, plain), 3e-2);
}

// The inference-only ops of the decode step against their plain compositions: the gated residual
// fused with the next modulated LayerNorm (H = 200 and 1280 the block-per-row kernel, 196 the
// four-wide one, 202 the plain fallback; with and without affine; adaLN chunks as strided views), and the q/k norm writing k and v straight into a
// KV cache slot given on the device.
TEST(FusedOpsCuda, InferenceResidualNormAndCacheAppendMatchPlainPath) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::NoGradGuard ng;
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  const int64_t B = 3, N = 5;
  for (int64_t H : {200, 1280, 196, 202})
  for (bool affine : {true, false})
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    torch::manual_seed(6);
    auto ln = make_ln(H, affine);
    ln->to(dt);
    auto x = (2 + 3 * torch::randn({B, N, H}, cu)).to(dt), y = torch::randn({B, N, H}, cu.dtype(dt));
    auto m = (0.5 * torch::randn({B, N, 6 * H}, cu)).to(dt).chunk(6, -1);
    auto plain = model::gated_residual_ln_modulate(x, m[2], y, ln, m[3], m[4], true, kPlain);
    auto fused = model::gated_residual_ln_modulate(x, m[2], y, ln, m[3], m[4], true, kFused);
    const bool f32 = dt == torch::kFloat32;
    EXPECT_LT(rel_err(fused[0], plain[0]), f32 ? 1e-6 : 8e-3) << "H " << H << " dtype " << dt;
    EXPECT_LT(rel_err(fused[1], plain[1]), f32 ? 2e-5 : 1.5e-2) << "H " << H << " affine " << affine << " dtype " << dt;
    ASSERT_EQ(fused[1].scalar_type(), plain[1].scalar_type());
  }
  const int64_t cap = 11, slot_index = 7;
  for (auto [H, heads] : {std::pair<int64_t, int64_t>{144, 3}, std::pair<int64_t, int64_t>{240, 3},
                          std::pair<int64_t, int64_t>{102, 3}})
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    torch::manual_seed(7);
    const int64_t hd = H / heads;
    auto qn = make_ln(hd, true), kn = make_ln(hd, true);
    qn->to(dt), kn->to(dt);
    auto qkv = 2 * torch::randn({B, 1, 3 * H}, cu.dtype(dt));
    auto k0 = torch::randn({B, heads, cap, hd}, cu.dtype(dt)), v0 = torch::randn({B, heads, cap, hd}, cu.dtype(dt));
    auto slot = torch::full({1}, slot_index, cu.dtype(torch::kInt64));
    auto kp = k0.clone(), vp = v0.clone(), kf = k0.clone(), vf = v0.clone();
    auto qp = model::qk_norm_into_cache(qkv, heads, qn, kn, kp, vp, slot, kPlain);
    auto qf = model::qk_norm_into_cache(qkv, heads, qn, kn, kf, vf, slot, kFused);
    ASSERT_EQ(qf.sizes(), qp.sizes());
    const double tol = dt == torch::kFloat32 ? 1e-5 : 1e-2;
    EXPECT_LT(rel_err(qf, qp), tol) << "H " << H << " dtype " << dt;
    EXPECT_LT(rel_err(kf, kp), tol) << "H " << H << " dtype " << dt;
    EXPECT_EQ(rel_err(vf, vp), 0.0) << "H " << H << " dtype " << dt;
    // the other slots are untouched
    auto others = torch::arange(cap, cu.dtype(torch::kInt64)).ne(slot_index);
    EXPECT_TRUE(kf.index({torch::indexing::Slice(), torch::indexing::Slice(), others}).equal(
        k0.index({torch::indexing::Slice(), torch::indexing::Slice(), others})));
  }
}

// The decode step's q/k norm + cache append + attention in one kernel equals the two kernels it
// replaces bit for bit (output and both caches), for every head width of the warp kernel, bf16 and
// fp8 caches and first, middle and last slots; and the plain path within bf16 tolerance.
TEST(FusedOpsCuda, QkNormDecodeAttentionEqualsTheTwoKernels) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::NoGradGuard ng;
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  const int64_t B = 5, heads = 3, cap = 13;
  const auto warp = model::AttentionKernel::warp;
  for (int64_t hd : {48, 64, 80, 88, 128})
  for (auto ct : {torch::kBFloat16, torch::kFloat8_e4m3fn})
  for (int64_t last : {int64_t{0}, int64_t{6}, cap - 1}) {
    DecodeInputs in(B, heads, hd, cap, last, ct, 10);
    auto &qn = in.qn, &kn = in.kn;
    auto &qkv = in.qkv, &k0 = in.k0, &v0 = in.v0, &slot = in.slot, &valid = in.valid;
    const auto bytes = bytes_of;
    const std::string what = "hd " + std::to_string(hd) + " cache " + c10::toString(ct) + " slot " +
                             std::to_string(last);
    auto kf = k0.clone(), vf = v0.clone();
    auto fused = model::qk_norm_decode_attention(qkv, heads, qn, kn, kf, vf, slot, valid, kFused, warp);
    auto kt = k0.clone(), vt = v0.clone();
    auto q = model::qk_norm_into_cache(qkv, heads, qn, kn, kt, vt, slot, kFused);
    auto two = model::decode_attention(q, kt, vt, slot, valid, kFused, warp);
    ASSERT_EQ(fused.sizes(), two.sizes()) << what;
    EXPECT_TRUE(fused.equal(two)) << what << ": max diff " << (fused - two).abs().max().item<float>();
    EXPECT_TRUE(bytes(kf).equal(bytes(kt))) << what;
    EXPECT_TRUE(bytes(vf).equal(bytes(vt))) << what;
    auto kp = k0.clone(), vp = v0.clone();
    auto plain = model::qk_norm_decode_attention(qkv, heads, qn, kn, kp, vp, slot, valid, kPlain, warp);
    EXPECT_LT(rel_err(fused, plain), ct == torch::kBFloat16 ? 2e-2 : 6e-2) << what;
  }
}

// The split variant of the decode step (8 warps per row and head, for few rows) against the warp
// kernel: the same cache bytes (the same append) and the same attention up to float summation order,
// for every head width, both cache dtypes, caches of 13 and 257 slots and fills that leave some of
// the 8 parts empty (1 slot) or ragged; "auto" takes it for few rows.
TEST(FusedOpsCuda, SplitDecodeAttentionMatchesTheWarpKernel) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::NoGradGuard ng;
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  const int64_t B = 2, heads = 3;
  for (int64_t hd : {48, 64, 80, 88, 128})
  for (auto ct : {torch::kBFloat16, torch::kFloat8_e4m3fn})
  for (auto [cap, last] : std::vector<std::pair<int64_t, int64_t>>{{13, 0}, {13, 6}, {13, 12}, {257, 3}, {257, 100}, {257, 256}}) {
    DecodeInputs in(B, heads, hd, cap, last, ct, 12);
    auto &qn = in.qn, &kn = in.kn;
    auto &qkv = in.qkv, &k0 = in.k0, &v0 = in.v0, &slot = in.slot, &valid = in.valid;
    const auto bytes = bytes_of;
    const std::string what = "hd " + std::to_string(hd) + " cache " + c10::toString(ct) + " cap " +
                             std::to_string(cap) + " slot " + std::to_string(last);
    auto kw = k0.clone(), vw = v0.clone();
    auto warp = model::qk_norm_decode_attention(qkv, heads, qn, kn, kw, vw, slot, valid, kFused, model::AttentionKernel::warp);
    auto ks = k0.clone(), vs = v0.clone();
    auto split = model::qk_norm_decode_attention(qkv, heads, qn, kn, ks, vs, slot, valid, kFused, model::AttentionKernel::split);
    EXPECT_TRUE(bytes(ks).equal(bytes(kw))) << what;
    EXPECT_TRUE(bytes(vs).equal(bytes(vw))) << what;
    EXPECT_LT(rel_err(split, warp), 1e-2) << what;
    auto ka = k0.clone(), va = v0.clone();  // auto: 6 (row, head) pairs take the split variant
    EXPECT_TRUE(model::qk_norm_decode_attention(qkv, heads, qn, kn, ka, va, slot, valid, kFused, model::AttentionKernel::automatic)
                    .equal(split))
        << what;
  }
}

// The decoder's nearest 2x upsampling kernel is the copy LibTorch's interpolate makes, in both
// layouts (output in the input's layout); shapes it does not take (W or C not a multiple of 8, a
// strided view) fall back to interpolate.
TEST(FusedOpsCuda, UpsampleNearest2xEqualsInterpolate) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::NoGradGuard ng;
  namespace F = torch::nn::functional;
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  for (auto dt : {torch::kFloat32, torch::kBFloat16})
  for (auto shape : {std::vector<int64_t>{2, 16, 5, 8}, std::vector<int64_t>{3, 24, 7, 16},
                     std::vector<int64_t>{2, 12, 4, 6}})
  for (bool channels_last : {false, true})
  for (bool view : {false, true}) {
    torch::manual_seed(9);
    auto x = torch::randn(shape, cu.dtype(dt));
    if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    if (view) x = x.narrow(3, 1, shape[3] - 1);  // neither layout contiguous
    auto want = F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0})
                                      .mode(torch::kNearest));
    auto got = model::upsample_nearest2x(x, kFused);
    const std::string what = "dtype " + std::string(c10::toString(dt)) + " C " + std::to_string(shape[1]) + " W " +
                             std::to_string(shape[3]) + (channels_last ? " channels-last" : " NCHW") +
                             (view ? " view" : "");
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    EXPECT_TRUE(got.equal(want)) << what;
    if (!view)
      EXPECT_EQ(got.is_contiguous(at::MemoryFormat::ChannelsLast) && !got.is_contiguous(), channels_last) << what;
  }
}

// A bf16 model's LayerNorm parameters are cast to float32 once and kept for the kernels: changing
// the parameter in place (as loading weights does) must be seen by the next call.
TEST(FusedOpsCuda, CachedAffineCastFollowsParameterUpdates) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::NoGradGuard ng;
  auto cu = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const int64_t H = 200;
  torch::manual_seed(8);
  auto ln = make_ln(H, true);
  ln->to(torch::kBFloat16);
  auto x = torch::randn({2, 3, H}, cu);
  auto m = torch::randn({2, 3, 2 * H}, cu).chunk(2, -1);
  auto check_equal_to_plain = [&](const char* when) {
    auto plain = model::ln_modulate(ln, x, m[0], m[1], kPlain);
    auto fused = model::ln_modulate(ln, x, m[0], m[1], kFused);
    EXPECT_LT(rel_err(fused, plain), 1.5e-2) << when;
    return fused;
  };
  auto before = check_equal_to_plain("first call");
  ln->weight.mul_(3);
  ln->bias.add_(1);
  auto after = check_equal_to_plain("after an in-place update");
  EXPECT_GT(rel_err(after, before), 0.1);
}

// The VQ decoder's GroupNorm + SiLU on channels-last activations against LibTorch's group_norm:
// 4 and 16 channels per group (the decoder's 128 and 512 channels in 32 groups), several statistics
// blocks per image (40x40 pixels), with and without SiLU; the output stays channels-last and two
// runs agree bit for bit (the statistics are summed in a fixed order).
TEST(FusedOpsCuda, GroupNormSiluChannelsLastMatchesPlainPath) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::NoGradGuard ng;
  for (int64_t C : {128, 512})
  for (auto dt : {torch::kFloat32, torch::kBFloat16})
  for (bool silu : {true, false}) {
    torch::manual_seed(9);
    torch::nn::GroupNorm gn(torch::nn::GroupNormOptions(32, C).eps(1e-6));
    gn->weight.copy_(1 + 0.3 * torch::randn({C}));
    gn->bias.copy_(0.2 * torch::randn({C}));
    gn->to(torch::kCUDA, dt);
    auto x = (3 + 2 * torch::randn({3, C, 40, 40}, torch::TensorOptions().device(torch::kCUDA)))
                 .to(dt)
                 .contiguous(at::MemoryFormat::ChannelsLast);
    auto plain = model::group_norm_silu(gn, x, kPlain, silu);
    auto fused = model::group_norm_silu(gn, x, kFused, silu);
    auto again = model::group_norm_silu(gn, x, kFused, silu);
    EXPECT_TRUE(fused.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_LT(rel_err(fused, plain), dt == torch::kFloat32 ? 1e-5 : 1.5e-2) << "C " << C << " dtype " << dt;
    EXPECT_TRUE(fused.equal(again)) << "C " << C << " dtype " << dt;
  }
}

// `--kv-cache fp8` on the GPU: the q/k-norm kernel writing fp8 keys and values into a cache slot
// against the plain append (bf16 values cast to fp8). (Decode attention over fp8 caches: above.)
TEST(FusedOpsCuda, Fp8KvCacheAppendMatchesPlainPath) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::NoGradGuard ng;
  auto cu = torch::TensorOptions().device(torch::kCUDA);
  const auto f8 = torch::kFloat8_e4m3fn;
  const int64_t B = 4;
  for (auto [H, heads2] : {std::pair<int64_t, int64_t>{144, 3}, std::pair<int64_t, int64_t>{240, 3}}) {
    torch::manual_seed(11);
    const int64_t hd = H / heads2, cap2 = 9;
    auto qn = make_ln(hd, true), kn = make_ln(hd, true);
    qn->to(torch::kBFloat16), kn->to(torch::kBFloat16);
    auto qkv = 2 * torch::randn({B, 1, 3 * H}, cu.dtype(torch::kBFloat16));
    auto slot = torch::full({1}, 4, cu.dtype(torch::kInt64));
    auto kp = torch::zeros({B, heads2, cap2, hd}, cu).to(f8), vp = kp.clone(), kf = kp.clone(), vf = kp.clone();
    auto qp = model::qk_norm_into_cache(qkv, heads2, qn, kn, kp, vp, slot, kPlain);
    auto qf = model::qk_norm_into_cache(qkv, heads2, qn, kn, kf, vf, slot, kFused);
    EXPECT_LT(rel_err(qf, qp), 1e-2) << "H " << H;
    EXPECT_TRUE(vf.view(torch::kUInt8).equal(vp.view(torch::kUInt8))) << "v: the same bf16 values cast alike, H " << H;
    EXPECT_LT(rel_err(kf.to(torch::kFloat32), kp.to(torch::kFloat32)), 0.07) << "k within one fp8 step, H " << H;
    EXPECT_GT(kf.to(torch::kFloat32).abs().sum().item<double>(), 0.0) << "the slot was written";
  }
}
