// model/ops/fp8: the fp8 products of training.fp8. On the CPU (LibTorch's emulated scaled matmul,
// the arithmetic of the fp8 tensor cores: products of the rounded operands summed in float32) the
// plain path: the casts against their definition, the products against float64 products of the
// dequantised operands (tight: each scale applied once, on the right side, each layout the right
// one) and of the exact ones (loose: fp8 rounding), the recomputing MLP against the ops kept
// apart, the generator's step against its twin without fp8. On CUDA (CUDA builds on a GPU): the
// cast kernels against the plain cast bit for bit, the fused ops against the plain ones, and the
// captured step (test_train_rar.cpp, CapturedStepEqualsTheEagerStep) with fp8 on.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include "model/ops/block_ops.h"
#include "model/ops/fp8.h"
#include "small_step.h"
#include "util/autocast.h"

using namespace rar;

namespace {

using test_support::have_kernels;
using test_support::kFused;
using test_support::kPlain;
const model::Fp8Mode kFp8{true};  // the products in fp8, current scaling

torch::Tensor f64(const torch::Tensor& t) { return t.to(torch::kFloat64); }
// The rows layout's first q.rows rows, dequantised.
torch::Tensor dequant(const model::Fp8Tensor& q) {
  const auto d = q.data.defined() ? q.data : q.data_t.t();
  return f64(d.narrow(0, 0, q.rows)) * f64(q.scale_inv);
}
model::Fp8Tensor cast(const torch::Tensor& t, at::ScalarType f) {
  return model::to_fp8(t, f, model::Fp8Layout::rows, kPlain);
}
// ||a - b|| / ||b||
double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return (f64(a) - f64(b)).norm().item<double>() / f64(b).norm().item<double>();
}
// Backward of adaln_split6's six chunks against random probes (returned, in chunk order).
std::vector<torch::Tensor> backward_probed(const std::array<torch::Tensor, 6>& m) {
  std::vector<torch::Tensor> probes;
  torch::Tensor loss = torch::zeros({});
  for (const auto& c : m) {
    probes.push_back(torch::randn(c.sizes()));
    loss = loss + (c * probes.back()).sum();
  }
  loss.backward();
  return probes;
}
// Recomputation repeats a step of loss l and gradients g: the recomputing MLP bit for bit, 2
// recomputed blocks the loss bit for bit and the gradients to float32 rounding (they add up in
// another order). `note` joins the gradients' failure message.
void expect_recomputation_repeats(test_support::SmallStep& s, double l, const torch::Tensor& g,
                                  const std::string& note = "") {
  s.g->set_recompute_mlp(true);
  auto [lm, gm] = s.step(false);
  EXPECT_EQ(lm, l);
  EXPECT_TRUE(torch::equal(gm, g));
  s.g->set_recompute_mlp(false);
  s.g->recompute_layers = 2;
  auto [lr, gr] = s.step(false);
  EXPECT_EQ(lr, l);
  EXPECT_LT(rel(gr, g), 1e-5) << note;
  s.g->recompute_layers = 0;
}
// fp8 tensors compared by their bytes (equal() on fp8 compares values: -0 == 0)
bool same_bytes(const torch::Tensor& a, const torch::Tensor& b) {
  return a.defined() == b.defined() &&
         (!a.defined() || (a.sizes() == b.sizes() && torch::equal(a.view(torch::kUInt8), b.view(torch::kUInt8))));
}

}  // namespace

TEST(Fp8, CastsMapTheLargestMagnitudeOntoTheFormat) {
  torch::manual_seed(1);
  for (double mag : {1e-5, 1.0, 3e4})
    for (auto fmt : {torch::kFloat8_e4m3fn, torch::kFloat8_e5m2}) {
      const auto t = mag * torch::randn({37, 48});
      const auto q = model::to_fp8(t, fmt, model::Fp8Layout::both, kPlain);
      ASSERT_EQ(q.data.scalar_type(), fmt);
      ASSERT_EQ(q.data.sizes(), (std::vector<int64_t>{48, 48}));  // rows padded to a multiple of 16
      EXPECT_EQ(q.rows, 37);
      EXPECT_TRUE(same_bytes(q.data_t, q.data.t().contiguous()));
      EXPECT_EQ(f64(q.data.narrow(0, 37, 11)).abs().max().item<double>(), 0.0);  // the padding is zeros
      const double top = fmt == torch::kFloat8_e4m3fn ? 448.0 : 57344.0;
      EXPECT_EQ(f64(q.data).abs().max().item<double>(), top) << mag;  // the largest lands on the largest
      EXPECT_TRUE(torch::isfinite(f64(q.data)).all().item<bool>());
      EXPECT_FLOAT_EQ(q.scale_inv.item<float>(), t.abs().max().item<float>() / top);
      // every element within half a step of its format (3 resp. 2 mantissa bits) of its value,
      // or below the smallest normal's resolution
      const double step = fmt == torch::kFloat8_e4m3fn ? 1.0 / 16 : 1.0 / 8;
      const auto err = (dequant(q) - f64(t)).abs();
      const auto bound = step * f64(t).abs() + 2 * t.abs().max().item<double>() / top * std::pow(2.0, -6);
      EXPECT_TRUE((err <= bound).all().item<bool>()) << mag;
      // one layout alone is that layout of both
      const auto only_t = model::to_fp8(t, fmt, model::Fp8Layout::transposed, kPlain);
      EXPECT_FALSE(only_t.data.defined());
      EXPECT_TRUE(same_bytes(only_t.data_t, q.data_t));
    }
  const auto z = cast(torch::zeros({16, 16}), torch::kFloat8_e4m3fn);  // all zeros: zeros, finite scale
  EXPECT_EQ(f64(z.data).abs().max().item<double>(), 0.0);
  EXPECT_TRUE(std::isfinite(z.scale_inv.item<double>()));
  EXPECT_THROW(cast(torch::zeros({4, 40}), torch::kFloat8_e4m3fn), c10::Error);  // 40 columns: no multiple of 16
}

// A row count that is no multiple of 16 (3·7): the padded rows change nothing.
TEST(Fp8, LinearIsTheProductOfItsRoundedOperandsBothWays) {
  torch::manual_seed(2);
  const int64_t K = 64, N = 48;
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto x = (3 * torch::randn({3, 7, K})).to(dt).requires_grad_(true);
    auto w = (0.1 * torch::randn({N, K})).requires_grad_(true);
    auto b = torch::randn({N}).requires_grad_(true);
    auto y = model::fp8_linear(x, w, b, kPlain);
    ASSERT_EQ(y.scalar_type(), dt);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{3, 7, N}));
    const auto g = torch::randn({3, 7, N}).to(dt);
    y.backward(g);
    const double tight = dt == torch::kFloat32 ? 1e-6 : 8e-3;  // the output's own rounding
    // forward: the float64 product of the e4m3 operands, plus the bias
    const auto xq = cast(x.detach().reshape({-1, K}), torch::kFloat8_e4m3fn);
    const auto wq = cast(w.detach(), torch::kFloat8_e4m3fn);
    const auto ref_y = dequant(xq).mm(dequant(wq).t()) + f64(b.detach().to(dt));
    EXPECT_LT(rel(y.detach().reshape({-1, N}), ref_y), tight);
    EXPECT_LT(rel(y.detach().reshape({-1, N}), f64(x.detach()).reshape({-1, K}).mm(f64(w.detach()).t()) + f64(b.detach())),
              0.1);  // fp8 rounding of both operands
    // backward: the e5m2 gradient against the e4m3 operands
    const auto gq = cast(g.reshape({-1, N}), torch::kFloat8_e5m2);
    ASSERT_EQ(x.grad().scalar_type(), dt);
    EXPECT_LT(rel(x.grad().reshape({-1, K}), dequant(gq).mm(dequant(wq))), tight);
    EXPECT_EQ(w.grad().scalar_type(), torch::kFloat32);
    EXPECT_LT(rel(w.grad(), dequant(gq).t().mm(dequant(xq))), 1e-6);
    EXPECT_LT(rel(b.grad(), f64(g).reshape({-1, N}).sum(0)), 1e-6);
    EXPECT_LT(rel(w.grad(), f64(g).reshape({-1, N}).t().mm(f64(x.detach()).reshape({-1, K}))), 0.2);
  }
}

// The MLP tail (GELU, dropout, fc2 in one op) with fc2 in fp8: against the float64 products of the
// rounded operands, its input's gradient through GELU and the mask included. 21 rows (padding).
TEST(Fp8, MlpTailIsTheProductOfItsRoundedOperandsBothWays) {
  torch::manual_seed(3);
  const int64_t K = 64, N = 32;
  const double p = 0.25;
  auto u = torch::randn({3, 7, K}).requires_grad_(true);
  auto w = (0.1 * torch::randn({N, K})).requires_grad_(true);
  auto b = torch::randn({N}).requires_grad_(true);
  const auto bits = model::pack_bits(torch::rand({3, 7, K}).ge(p));
  auto y = model::gelu_dropout_linear_saving(u, bits, p, w, b, kPlain, kFp8);
  const auto g = torch::randn({3, 7, N});
  y.backward(g);
  const auto keep = f64(model::unpack_bits(bits, {3, 7, K})).reshape({-1, K}) / (1 - p);
  const auto a = (at::gelu(u.detach()).reshape({-1, K}) * keep.to(torch::kFloat32));
  const auto aq = cast(a, torch::kFloat8_e4m3fn), wq = cast(w.detach(), torch::kFloat8_e4m3fn);
  EXPECT_LT(rel(y.detach().reshape({-1, N}), dequant(aq).mm(dequant(wq).t()) + f64(b.detach())), 1e-6);
  const auto gq = cast(g.reshape({-1, N}), torch::kFloat8_e5m2);
  const auto ga = (dequant(gq).mm(dequant(wq)) * keep).to(torch::kFloat32).view({3, 7, K});
  EXPECT_LT(rel(u.grad(), at::gelu_backward(ga, u.detach())), 1e-5);
  EXPECT_LT(rel(w.grad(), dequant(gq).t().mm(dequant(aq))), 1e-6);
  EXPECT_LT(rel(b.grad(), f64(g).reshape({-1, N}).sum(0)), 1e-6);
  // and near the float32 op (fp8 rounding)
  auto y32 = model::gelu_dropout_linear_saving(u.detach(), bits, p, w.detach(), b.detach(), kPlain);
  EXPECT_LT(rel(y.detach(), y32), 0.1);
  EXPECT_GT(rel(y.detach(), y32), 1e-4);  // and fp8 did run
}

// The recomputing MLP in fp8 against fc1 through the fp8 linear and the fp8 tail op: every cast is
// recomputed from the same values (current scaling keeps no state), so outputs and gradients are
// equal bit for bit; on CUDA too under bf16 autocast on both paths.
TEST(Fp8, MlpRecomputingEqualsTheOpsKeptApart) {
  std::vector<std::tuple<torch::Device, bool, model::OpPath>> cases = {{torch::kCPU, false, kPlain}};
  if (torch::cuda::is_available())
    cases.insert(cases.end(), {{torch::kCUDA, true, kPlain}, {torch::kCUDA, true, kFused}});
  for (auto [dev, autocast, path] : cases)
    for (bool dropout : {false, true}) {
      torch::manual_seed(5);
      const double p = 0.25;
      const int64_t H = 32, width = 64;
      torch::nn::Linear fc1(H, width), fc2(width, H);
      fc1->to(dev), fc2->to(dev);
      const auto x0 = (2 * torch::randn({3, 7, H})).to(dev).to(autocast ? torch::kBFloat16 : torch::kFloat32);
      const auto bits = dropout ? model::pack_bits(torch::rand({3, 7, width}).gt(p).to(dev)) : torch::Tensor();
      const auto probe = torch::randn({3, 7, H}).to(dev);
      auto run = [&](bool recompute) {
        auto x = x0.detach().requires_grad_(true);
        for (auto& q : {fc1->weight, fc1->bias, fc2->weight, fc2->bias}) q.mutable_grad() = torch::Tensor();
        torch::Tensor y;
        {
          Autocast ac(autocast, torch::kCUDA, torch::kBFloat16);
          y = recompute ? model::mlp_recomputing_masked(x, bits, p, *fc1, *fc2, path, kFp8)
                        : model::gelu_dropout_linear_saving(model::linear(*fc1, x, path, kFp8), bits, p, fc2->weight,
                                                            fc2->bias, path, kFp8);
        }
        (y.to(torch::kFloat32) * probe).sum().backward();
        return std::vector<torch::Tensor>{y.detach(),          x.grad(),           fc1->weight.grad().clone(),
                                          fc1->bias.grad().clone(), fc2->weight.grad().clone(), fc2->bias.grad().clone()};
      };
      const auto kept = run(false), recomputed = run(true);
      const std::string what = c10::str(dev, " path ", static_cast<int>(path), " dropout ", dropout);
      for (size_t i = 0; i < kept.size(); ++i) {
        ASSERT_EQ(recomputed[i].scalar_type(), kept[i].scalar_type()) << what << " item " << i;
        EXPECT_TRUE(torch::equal(recomputed[i], kept[i])) << what << " item " << i;
      }
      // fp8 ran: the float op's output differs by fp8 rounding
      torch::Tensor y_ref;
      {
        Autocast ac(autocast, torch::kCUDA, torch::kBFloat16);
        y_ref = model::gelu_dropout_linear_saving(model::linear(*fc1, x0, path), bits, p, fc2->weight, fc2->bias, path);
      }
      EXPECT_GT(rel(kept[0], y_ref.detach()), 1e-4) << what;
      EXPECT_LT(rel(kept[0], y_ref.detach()), 0.1) << what;
    }
}

// A block's adaLN products in fp8 (adaln_split6 with fp8): each of the two row groups of W cast on
// its own, x cast once; the six chunks, and x's, W's and b's gradients in W's row order, against the
// float64 products of the rounded operands.
TEST(Fp8, AdalnSplitIsTheProductOfItsRoundedOperandsBothWays) {
  torch::manual_seed(4);
  const int64_t H = 32;
  torch::nn::Linear lin(H, 6 * H);
  {
    torch::NoGradGuard ng;
    lin->bias.normal_();  // (the published init zeroes both)
  }
  auto x = torch::randn({3, 7, H}).requires_grad_(true);
  const auto m = model::adaln_split6(*lin, x, /*training=*/true, kPlain, kFp8);
  const auto probes = backward_probed(m);
  const auto [ws, wk] = model::adaln_split_rows(lin->weight.detach());
  const auto [bs, bk] = model::adaln_split_rows(lin->bias.detach());
  const auto xq = cast(x.detach().reshape({-1, H}), torch::kFloat8_e4m3fn);
  const auto wsq = cast(ws, torch::kFloat8_e4m3fn), wkq = cast(wk, torch::kFloat8_e4m3fn);
  const auto ys = dequant(xq).mm(dequant(wsq).t()) + f64(bs), yk = dequant(xq).mm(dequant(wkq).t()) + f64(bk);
  // chunk order: shift_a, scale_a, gate_a, shift_m, scale_m, gate_m
  const std::vector<torch::Tensor> ref = {ys.narrow(1, 0, H), yk.narrow(1, 0, H), yk.narrow(1, H, H),
                                          ys.narrow(1, H, H), yk.narrow(1, 2 * H, H), yk.narrow(1, 3 * H, H)};
  for (size_t i = 0; i < 6; ++i) EXPECT_LT(rel(m[i].detach().reshape({-1, H}), ref[i]), 1e-6) << "chunk " << i;
  auto flat = [&](size_t i) { return probes[i].reshape({-1, H}); };
  const auto gs = torch::cat({flat(0), flat(3)}, 1), gk = torch::cat({flat(1), flat(2), flat(4), flat(5)}, 1);
  const auto gsq = cast(gs, torch::kFloat8_e5m2), gkq = cast(gk, torch::kFloat8_e5m2);
  EXPECT_LT(rel(x.grad().reshape({-1, H}), dequant(gsq).mm(dequant(wsq)) + dequant(gkq).mm(dequant(wkq))), 1e-6);
  EXPECT_EQ(lin->weight.grad().scalar_type(), torch::kFloat32);
  EXPECT_LT(rel(lin->weight.grad(), model::adaln_join_rows(dequant(gsq).t().mm(dequant(xq)),
                                                           dequant(gkq).t().mm(dequant(xq)))),
            1e-6);
  EXPECT_LT(rel(lin->bias.grad(), model::adaln_join_rows(f64(gs).sum(0), f64(gk).sum(0))), 1e-6);
  // near the float32 products (fp8 rounding), and not equal to them
  const auto y32 = at::linear(x.detach(), lin->weight.detach(), lin->bias.detach()).chunk(6, -1);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_LT(rel(m[i].detach(), y32[i]), 0.1) << i;
    EXPECT_GT(rel(m[i].detach(), y32[i]), 1e-4) << i;
  }
  // Under bf16 autocast (the GPU step's setting; the CPU's autocast here) x comes as float32, as the
  // generator computes SiLU(c): the chunks in bf16 (the same products, rounded to bf16), and x's
  // gradient in float32 from the bf16 output gradients (no bf16 copy of x or of its gradient)
  auto xa = x.detach().clone().requires_grad_(true);
  std::array<torch::Tensor, 6> ma;
  {
    Autocast ac(true, torch::kCPU, torch::kBFloat16);
    ma = model::adaln_split6(*lin, xa, /*training=*/true, kPlain, kFp8);
  }
  torch::Tensor loss = torch::zeros({});
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(ma[i].scalar_type(), torch::kBFloat16) << i;
    EXPECT_LT(rel(ma[i].detach().reshape({-1, H}), ref[i]), 5e-3) << "chunk " << i;  // bf16's rounding
    loss = loss + (ma[i].to(torch::kFloat32) * probes[i]).sum();
  }
  loss.backward();
  ASSERT_EQ(xa.grad().scalar_type(), torch::kFloat32);
  auto flat16 = [&](size_t i) { return probes[i].to(torch::kBFloat16).to(torch::kFloat32).reshape({-1, H}); };
  const auto gsq16 = cast(torch::cat({flat16(0), flat16(3)}, 1), torch::kFloat8_e5m2);
  const auto gkq16 = cast(torch::cat({flat16(1), flat16(2), flat16(4), flat16(5)}, 1), torch::kFloat8_e5m2);
  EXPECT_LT(rel(xa.grad().reshape({-1, H}), dequant(gsq16).mm(dequant(wsq)) + dequant(gkq16).mm(dequant(wkq))), 1e-6);
}

// fp8 on a GPU without fp8 products is refused up front, in one line naming the setting, the device
// and its capability; Ada (8.9), Hopper (9.0) and the CPU (an emulation) run them.
TEST(Fp8, DevicesWithoutFp8ProductsAreRefusedInOneLine) {
  const torch::Device gpu("cuda:1");
  EXPECT_EQ(model::fp8_device_problem(gpu, {"NVIDIA A100-SXM4-80GB", 8, 0}, "training.fp8"),
            "training.fp8: the fp8 products need a GPU of compute capability 8.9 or above (Ada, Hopper or later); "
            "cuda:1 (NVIDIA A100-SXM4-80GB) is 8.0: leave it off on this GPU");
  EXPECT_NE(model::fp8_device_problem(gpu, {"NVIDIA A10", 8, 6}, "--fp8").find("--fp8: "), std::string::npos);
  EXPECT_EQ(model::fp8_device_problem(gpu, {"NVIDIA L4", 8, 9}, "training.fp8"), "");
  EXPECT_EQ(model::fp8_device_problem(gpu, {"NVIDIA H100 80GB HBM3", 9, 0}, "training.fp8"), "");
  EXPECT_EQ(model::fp8_device_problem(torch::kCPU, {}, "training.fp8"), "");
  EXPECT_NO_THROW(model::check_fp8_device(torch::kCPU, "training.fp8"));
}

TEST(Fp8, ProductsOfOtherShapesStayInTheModelsDtype) {
  torch::nn::Linear odd(40, 48);  // K = 40: no multiple of 16
  const auto x = torch::randn({2, 5, 40});
  EXPECT_FALSE(model::fp8_product_fits(x, odd->weight));
  EXPECT_TRUE(torch::equal(model::linear(*odd, x, kPlain, kFp8), at::linear(x, odd->weight, odd->bias)));
}

// The generator with training.fp8: in training its step stays near the float32 step's loss and
// gradients; recomputed blocks and the recomputing MLP repeat its forward exactly (fp8 is decided
// by training mode, so a recomputation under gradients takes the same products as the forward
// without); in evaluation the model computes as without fp8.
TEST(Fp8, GeneratorStepNearItsTwinAndRecomputationRepeatsIt) {
  auto s = test_support::small_step(32, 2, torch::kCPU);
  auto [l32, g32] = s.step(false);
  s.g->use_fp8(true);
  auto [l8, g8] = s.step(false);
  EXPECT_NE(l8, l32);  // the products did change
  EXPECT_NEAR(l8, l32, 0.02 * std::abs(l32));
  EXPECT_GT(torch::cosine_similarity(g8, g32, 0).item<double>(), 0.98);
  EXPECT_GT(rel(g8, g32), 1e-3);
  // (recomputed blocks' float32 rounding: far below what fp8 changes)
  expect_recomputation_repeats(s, l8, g8, "fp8 vs float32: " + std::to_string(rel(g8, g32)));
  s.g->eval();
  torch::NoGradGuard ng;
  auto orders = torch::arange(64).expand({8, 64});
  const auto with = s.g->forward(s.tokens, s.labels, orders);
  s.g->use_fp8(false);
  EXPECT_TRUE(torch::equal(with, s.g->forward(s.tokens, s.labels, orders)));
}

// ---------------------------------------------------------------- delayed scaling

namespace {
float amax_of(const torch::Tensor& t) { return t.to(torch::kFloat32).abs().max().item<float>(); }
// A fresh op's slots [n, 2]: column 0 the magnitudes to scale by, column 1 the records.
torch::Tensor fresh_slots(int64_t n) { return torch::zeros({n, 2}); }
}  // namespace

// A delayed cast: the given magnitude maps onto the format's largest value (larger values saturate),
// the record becomes max(record, the tensor's own largest magnitude), NaN winning; without the
// magnitude (a history holding no step yet) it is the current cast, recorded.
TEST(Fp8, DelayedCastScalesByTheGivenMagnitudeAndRecordsItsOwn) {
  torch::manual_seed(11);
  const auto t = 3 * torch::randn({37, 48});
  const float own = amax_of(t);
  auto slots = fresh_slots(1);
  slots.index_put_({0, 0}, own / 2);  // half the largest: the largest values saturate
  slots.index_put_({0, 1}, own / 4);  // a smaller record: replaced
  const model::Fp8Scaling delayed{slots, true};
  const auto q = model::to_fp8(t, torch::kFloat8_e4m3fn, model::Fp8Layout::both, kPlain, delayed.slot(0));
  const auto by = torch::full({}, own / 2);
  EXPECT_TRUE(torch::equal(q.scale_inv, by.div(448.0f)));
  const auto expect = (t * torch::full({}, 448.0f).div(by)).clamp(-448, 448).to(torch::kFloat8_e4m3fn);
  EXPECT_TRUE(same_bytes(q.data.narrow(0, 0, 37), expect));
  EXPECT_TRUE(same_bytes(q.data_t, q.data.t().contiguous()));
  EXPECT_GT(f64(q.data).abs().eq(448).sum().item<int64_t>(), 1);  // saturated, not infinite
  EXPECT_EQ(slots[0][1].item<float>(), own);
  EXPECT_EQ(slots[0][0].item<float>(), own / 2);  // the magnitude to scale by is only read
  slots.index_put_({0, 1}, 2 * own);  // a larger record stays
  model::to_fp8(t, torch::kFloat8_e4m3fn, model::Fp8Layout::rows, kPlain, delayed.slot(0));
  EXPECT_EQ(slots[0][1].item<float>(), 2 * own);
  // before the history holds a step: the current cast's bytes, recorded
  auto priming = fresh_slots(1);
  const auto p = model::to_fp8(t, torch::kFloat8_e5m2, model::Fp8Layout::both, kPlain,
                               model::Fp8Scaling{priming, false}.slot(0));
  const auto c = model::to_fp8(t, torch::kFloat8_e5m2, model::Fp8Layout::both, kPlain);
  EXPECT_TRUE(same_bytes(p.data, c.data));
  EXPECT_TRUE(torch::equal(p.scale_inv, c.scale_inv));
  EXPECT_EQ(priming[0][1].item<float>(), own);
  EXPECT_EQ(priming[0][0].item<float>(), 0.0f);
  // a NaN operand's record is NaN (advance() then keeps the previous scale)
  auto bad = t.clone();
  bad.index_put_({3, 5}, std::nanf(""));
  model::to_fp8(bad, torch::kFloat8_e4m3fn, model::Fp8Layout::rows, kPlain, delayed.slot(0));
  EXPECT_TRUE(std::isnan(slots[0][1].item<float>()));
}

// The history: each operand scaled by the max of its last `length` steps' records; a non-finite
// record enters as the operand's previous scale; records cleared at each step; delayed only once
// every operand has had a magnitude above zero; a checkpoint's copy (state, load) restores the
// scales exactly, and a copy of another shape is refused naming it.
TEST(Fp8, HistoryScalesByItsLastStepsAndKeepsThroughACheckpoint) {
  model::Fp8History h(2, 3);
  EXPECT_EQ(h.operands(), 2 * model::Fp8History::kPerBlock);
  EXPECT_EQ(model::Fp8History::kPerBlock, 17);  // qkv 3, proj 3, MLP 6, adaLN 5
  EXPECT_FALSE(h.primed());
  EXPECT_FALSE(h.holds_step());
  EXPECT_FALSE(h.scaling(0, 3, torch::kCPU).delayed);
  h.records().fill_(0.125f);
  h.records().index_put_({20}, 0.0f);  // one operand all zeros (a zero-initialised weight): not yet
  h.advance();
  EXPECT_TRUE(h.holds_step());
  EXPECT_FALSE(h.primed());
  EXPECT_FALSE(h.scaling(0, 3, torch::kCPU).delayed);
  const std::vector<float> steps = {1, 5, 2, 3, 0.5, INFINITY, NAN, 0.25};
  const std::vector<float> scale = {1, 5, 5, 5, 3, 3, 3, 3};  // max over the last three (inf, NaN: the previous scale)
  for (size_t i = 0; i < steps.size(); ++i) {
    h.records().fill_(0.125f);
    h.records().index_put_({7}, steps[i]);
    h.records().index_put_({8}, 1.0f + static_cast<float>(i));
    h.advance();
    EXPECT_TRUE(h.primed());
    const auto sc = h.scaling(0, h.operands(), torch::kCPU);
    EXPECT_TRUE(sc.delayed);
    EXPECT_EQ(sc.slots[7][0].item<float>(), scale[i]) << "step " << i;
    EXPECT_EQ(sc.slots[8][0].item<float>(), 1.0f + static_cast<float>(i)) << "step " << i;  // growing: the newest
    EXPECT_EQ(sc.slots[0][0].item<float>(), 0.125f);
    EXPECT_EQ(h.records().abs().sum().item<float>(), 0.0f);
  }
  const auto saved = h.state();
  ASSERT_EQ(saved.sizes(), (std::vector<int64_t>{h.operands(), 3}));
  model::Fp8History back(2, 3);
  back.load(saved, "ck/optimizer.safetensors: fp8.amax_history");
  EXPECT_TRUE(back.primed());
  EXPECT_TRUE(torch::equal(back.scaling(0, back.operands(), torch::kCPU).slots,
                           h.scaling(0, h.operands(), torch::kCPU).slots));
  model::Fp8History other(1, 3);
  try {
    other.load(saved, "ck/optimizer.safetensors: fp8.amax_history");
    ADD_FAILURE() << "a history of another shape was loaded";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("ck/optimizer.safetensors: fp8.amax_history: expected"), std::string::npos)
        << e.what();
  }
}

// Every fp8 op records each of its operands in its own row (fp8.h's kFp8... rows): the linear's
// input, weight and output gradient; the MLP tail's a = GELU(u)·mask, W and gradient; the
// recomputing MLP's six, as fc1's linear and the tail op kept apart record them; the adaLN's input,
// two weight groups and two gradients. While priming (no step in the history) the values are the
// current-scaling ops' bit for bit; scaled by magnitudes from the history, the products are those of
// the operands cast with those magnitudes.
TEST(Fp8, DelayedOpsRecordEachOperandInItsRowAndScaleByIt) {
  torch::manual_seed(12);
  const int64_t H = 32, width = 64;
  const double p = 0.25;
  torch::nn::Linear fc1(H, width), fc2(width, H), ada(H, 6 * H);
  {
    torch::NoGradGuard ng;
    ada->bias.normal_();
  }
  const auto x0 = 2 * torch::randn({3, 7, H});
  const auto bits = model::pack_bits(torch::rand({3, 7, width}).gt(p));
  const auto probe = torch::randn({3, 7, H});
  auto clear = [](std::initializer_list<torch::Tensor> ps) {
    for (auto q : ps) q.mutable_grad() = torch::Tensor();
  };
  // the linear (fc1): rows x, W, g
  {
    auto slots = fresh_slots(3);
    auto x = x0.detach().requires_grad_(true);
    clear({fc1->weight, fc1->bias});
    auto y = model::linear(*fc1, x, kPlain, model::Fp8Mode{true, {slots, false}});
    const auto g = torch::randn(y.sizes());
    y.backward(g);
    EXPECT_EQ(slots[model::kFp8LinearInput][1].item<float>(), amax_of(x0));
    EXPECT_EQ(slots[model::kFp8LinearWeight][1].item<float>(), amax_of(fc1->weight));
    EXPECT_EQ(slots[model::kFp8LinearGrad][1].item<float>(), amax_of(g));
    auto xc = x0.detach().requires_grad_(true);
    const auto gw = fc1->weight.grad().clone();
    clear({fc1->weight, fc1->bias});
    auto yc = model::linear(*fc1, xc, kPlain, kFp8);
    yc.backward(g);
    EXPECT_TRUE(torch::equal(y, yc));
    EXPECT_TRUE(torch::equal(x.grad(), xc.grad()));
    EXPECT_TRUE(torch::equal(gw, fc1->weight.grad()));
    // delayed: scaled by 1.5 times each magnitude (nothing saturates; not a power of two, so the
    // roundings differ from the current scales')
    slots.select(1, 0).copy_(1.5 * slots.select(1, 1));
    slots.select(1, 1).zero_();
    auto xd = x0.detach().requires_grad_(true);
    clear({fc1->weight, fc1->bias});
    auto yd = model::linear(*fc1, xd, kPlain, model::Fp8Mode{true, {slots, true}});
    yd.backward(g);
    const model::Fp8Scaling sc{slots, true};
    const auto xq = model::to_fp8(x0.reshape({-1, H}), torch::kFloat8_e4m3fn, model::Fp8Layout::rows, kPlain,
                                  {sc.slot(0).scale_by, {}});
    const auto wq = model::to_fp8(fc1->weight.detach(), torch::kFloat8_e4m3fn, model::Fp8Layout::rows, kPlain,
                                  {sc.slot(1).scale_by, {}});
    const auto gq = model::to_fp8(g.reshape({-1, width}), torch::kFloat8_e5m2, model::Fp8Layout::rows, kPlain,
                                  {sc.slot(2).scale_by, {}});
    EXPECT_LT(rel(yd.detach().reshape({-1, width}), dequant(xq).mm(dequant(wq).t()) + f64(fc1->bias.detach())), 1e-6);
    EXPECT_LT(rel(xd.grad().reshape({-1, H}), dequant(gq).mm(dequant(wq))), 1e-6);
    EXPECT_LT(rel(fc1->weight.grad(), dequant(gq).t().mm(dequant(xq))), 1e-6);
    EXPECT_FALSE(torch::equal(yd, yc));  // other scales, other roundings
    EXPECT_EQ(slots[model::kFp8LinearGrad][1].item<float>(), amax_of(g));  // recorded while delayed too
  }
  // the recomputing MLP against fc1's linear and the tail op kept apart: the same six records, and
  // (priming, then delayed by those records) the same values and gradients, bit for bit
  for (bool delayed : {false, true}) {
    auto kept_slots = fresh_slots(model::kFp8MlpOperands), rec_slots = fresh_slots(model::kFp8MlpOperands);
    if (delayed) {
      const auto m = torch::tensor({1.5f * amax_of(x0), 0.2f, 0.05f, 3.0f, 0.3f, 1.0f});
      kept_slots.select(1, 0).copy_(m);
      rec_slots.select(1, 0).copy_(m);
    }
    const model::Fp8Scaling kept_sc{kept_slots, delayed}, rec_sc{rec_slots, delayed};
    auto run = [&](bool recompute) {
      auto x = x0.detach().requires_grad_(true);
      clear({fc1->weight, fc1->bias, fc2->weight, fc2->bias});
      const auto y = recompute
                         ? model::mlp_recomputing_masked(x, bits, p, *fc1, *fc2, kPlain, {true, rec_sc})
                         : model::gelu_dropout_linear_saving(
                               model::linear(*fc1, x, kPlain, {true, kept_sc.rows(model::kFp8MlpFc1, 3)}), bits, p,
                               fc2->weight, fc2->bias, kPlain, {true, kept_sc.rows(model::kFp8MlpFc2, 3)});
      (y * probe).sum().backward();
      return std::vector<torch::Tensor>{y.detach(), x.grad(), fc1->weight.grad().clone(), fc2->weight.grad().clone()};
    };
    const auto kept = run(false), recomputed = run(true);
    for (size_t i = 0; i < kept.size(); ++i) EXPECT_TRUE(torch::equal(kept[i], recomputed[i])) << delayed << " " << i;
    EXPECT_TRUE(torch::equal(kept_slots, rec_slots)) << delayed << "\n" << kept_slots << "\n" << rec_slots;
    const auto a = at::gelu(fc1->forward(x0)) * model::unpack_bits(bits, {3, 7, width}).to(torch::kFloat32) / (1 - p);
    EXPECT_EQ(kept_slots[model::kFp8MlpFc1 + model::kFp8LinearInput][1].item<float>(), amax_of(x0));
    EXPECT_EQ(kept_slots[model::kFp8MlpFc1 + model::kFp8LinearWeight][1].item<float>(), amax_of(fc1->weight));
    EXPECT_EQ(kept_slots[model::kFp8MlpFc2 + model::kFp8LinearWeight][1].item<float>(), amax_of(fc2->weight));
    EXPECT_EQ(kept_slots[model::kFp8MlpFc2 + model::kFp8LinearGrad][1].item<float>(), amax_of(probe));
    if (!delayed)  // (fc1's output differs by fp8 rounding from the float32 one: a near it)
      EXPECT_NEAR(kept_slots[model::kFp8MlpFc2 + model::kFp8LinearInput][1].item<float>(), amax_of(a), 0.1 * amax_of(a));
    EXPECT_GT(kept_slots[model::kFp8MlpFc1 + model::kFp8LinearGrad][1].item<float>(), 0.0f);
  }
  // the adaLN products: x, the shifts' and the others' weights, their two gradients
  {
    auto slots = fresh_slots(model::kFp8AdalnOperands);
    auto x = x0.detach().requires_grad_(true);
    const auto m = model::adaln_split6(*ada, x, true, kPlain, model::Fp8Mode{true, {slots, false}});
    const auto probes = backward_probed(m);
    const auto [ws, wk] = model::adaln_split_rows(ada->weight.detach());
    const auto gs = torch::cat({probes[0], probes[3]}, -1), gk = torch::cat({probes[1], probes[2], probes[4], probes[5]}, -1);
    EXPECT_EQ(slots[model::kFp8AdalnInput][1].item<float>(), amax_of(x0));
    EXPECT_EQ(slots[model::kFp8AdalnShiftWeight][1].item<float>(), amax_of(ws));
    EXPECT_EQ(slots[model::kFp8AdalnScaleWeight][1].item<float>(), amax_of(wk));
    EXPECT_EQ(slots[model::kFp8AdalnShiftGrad][1].item<float>(), amax_of(gs));
    EXPECT_EQ(slots[model::kFp8AdalnScaleGrad][1].item<float>(), amax_of(gk));
  }
}

// The generator with delayed scaling: its first step (the history empty) is the current-scaling
// step bit for bit and records every one of the blocks' operands; scaled by a history holding that
// very step (same batch, same weights) the second step is the current one again, bit for bit — the
// delayed path's arithmetic is the current path's given the same magnitudes; recomputed blocks and
// the recomputing MLP repeat it; scaled by other magnitudes it moves by fp8 rounding only.
TEST(Fp8, DelayedGeneratorStepPrimesThenScalesByTheHistory) {
  auto s = test_support::small_step(32, 2, torch::kCPU);
  s.g->use_fp8(true);
  auto [lc, gc] = s.step(false);
  s.g->use_fp8(true, 4);
  auto* h = s.g->fp8_history();
  ASSERT_NE(h, nullptr);
  auto [l1, g1] = s.step(false);
  EXPECT_EQ(l1, lc);
  EXPECT_TRUE(torch::equal(g1, gc));
  EXPECT_GT(h->records().min().item<float>(), 0.0f) << "an operand without a record:\n" << h->records();
  h->advance();
  auto [l2, g2] = s.step(false);
  EXPECT_EQ(l2, lc);
  EXPECT_TRUE(torch::equal(g2, gc));
  h->advance();
  expect_recomputation_repeats(s, lc, gc);
  // a history whose magnitudes are 1.5x the step's: other roundings, the same step to fp8's precision
  h->load(1.5 * h->state(), "test");
  auto [l3, g3] = s.step(false);
  EXPECT_NE(l3, lc);
  EXPECT_NEAR(l3, lc, 0.02 * std::abs(lc));
  EXPECT_GT(torch::cosine_similarity(g3, gc, 0).item<double>(), 0.98);
  s.g->use_fp8(false);
  EXPECT_EQ(s.g->fp8_history(), nullptr);
}

// CUDA: the cast kernels write the plain cast's bytes and scale, for both formats, float32 and bf16
// inputs, each layout, row counts that are no multiple of 16 or of the kernel's 128-row tile,
// column counts that are no multiple of its 64-column tile, all-zero and single-row tensors.
TEST(Fp8Cuda, CastKernelsWriteThePlainCastsBytes) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::manual_seed(6);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 16}, {37, 48}, {129, 80}, {300, 1280}, {2053, 3840}};
  for (auto [rows, cols] : shapes)
    for (auto dt : {torch::kFloat32, torch::kBFloat16})
      for (auto fmt : {torch::kFloat8_e4m3fn, torch::kFloat8_e5m2})
        for (double mag : {0.0, 1e-3, 1.0, 5e4}) {
          // heavy tails so that saturation, subnormals and every exponent occur
          const auto t = (mag * torch::randn({rows, cols}) * torch::randn({rows, cols}).exp()).to(dt).cuda();
          for (auto layout : {model::Fp8Layout::both, model::Fp8Layout::rows, model::Fp8Layout::transposed}) {
            const auto k = model::to_fp8(t, fmt, layout, kFused);
            const auto r = model::to_fp8(t, fmt, layout, kPlain);
            const std::string what = c10::str(rows, "x", cols, " ", dt, " ", fmt, " ", mag, " layout ",
                                              static_cast<int>(layout));
            EXPECT_EQ(k.rows, rows) << what;
            EXPECT_TRUE(same_bytes(k.data, r.data)) << what;
            EXPECT_TRUE(same_bytes(k.data_t, r.data_t)) << what;
            EXPECT_TRUE(torch::equal(k.scale_inv, r.scale_inv)) << what << ": " << k.scale_inv.item<float>() << " vs "
                                                                << r.scale_inv.item<float>();
          }
        }
  // a view that starts off a 16-byte boundary takes the plain path, with the same result
  const auto base = torch::randn({5, 64}, torch::kCUDA);
  const auto view = base.view(-1).narrow(0, 4, 4 * 48).view({4, 48});
  EXPECT_TRUE(same_bytes(model::to_fp8(view, torch::kFloat8_e4m3fn, model::Fp8Layout::both, kFused).data,
                         model::to_fp8(view, torch::kFloat8_e4m3fn, model::Fp8Layout::both, kPlain).data));
}

// CUDA: the quantising kernel scaled by a given magnitude (delayed scaling: 0.6 of the tensor's
// largest saturates its top, 1.7 does not) or by its own (a history holding no step yet) writes the
// plain cast's bytes and scale and records the plain path's largest magnitude (an atomic max of the
// float bits over the grid's tiles; a smaller record replaced, NaN winning), without a pass of its own.
TEST(Fp8Cuda, DelayedCastKernelWritesThePlainBytesAndRecord) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::manual_seed(9);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 16}, {37, 48}, {129, 80}, {2053, 3840}};
  for (auto [rows, cols] : shapes)
    for (auto dt : {torch::kFloat32, torch::kBFloat16})
      for (auto fmt : {torch::kFloat8_e4m3fn, torch::kFloat8_e5m2})
        for (double by : {0.0, 0.6, 1.7}) {
          auto t = (torch::randn({rows, cols}) * torch::randn({rows, cols}).exp()).to(dt).cuda();
          const bool nan = by == 1.7 && rows > 1;
          if (nan) t.index_put_({rows / 2, cols - 1}, std::nanf(""));
          const float own = amax_of(t);
          auto slots_for = [&] {
            auto sl = torch::zeros({1, 2}, torch::kCUDA);
            if (by > 0) sl.index_put_({0, 0}, static_cast<float>(by) * (nan ? 1.0f : own));
            sl.index_put_({0, 1}, 0.01f * (nan ? 1.0f : own));
            return sl;
          };
          auto ks = slots_for(), ps = slots_for();
          const auto k = model::to_fp8(t, fmt, model::Fp8Layout::both, kFused, model::Fp8Scaling{ks, by > 0}.slot(0));
          const auto r = model::to_fp8(t, fmt, model::Fp8Layout::both, kPlain, model::Fp8Scaling{ps, by > 0}.slot(0));
          const std::string what = c10::str(rows, "x", cols, " ", dt, " ", fmt, " by ", by);
          EXPECT_TRUE(torch::equal(k.scale_inv, r.scale_inv)) << what;
          if (!nan) {  // (a NaN's fp8 bytes are the converter's choice)
            EXPECT_TRUE(same_bytes(k.data, r.data)) << what;
            EXPECT_TRUE(same_bytes(k.data_t, r.data_t)) << what;
          }
          if (nan) {
            EXPECT_TRUE(std::isnan(ks[0][1].item<float>())) << what;
            EXPECT_TRUE(std::isnan(ps[0][1].item<float>())) << what;
          } else {
            EXPECT_EQ(ks[0][1].item<float>(), own) << what;
            EXPECT_TRUE(torch::equal(ks, ps)) << what;
          }
        }
}

// CUDA: a gradient's products from the fused cast, whose pass over g also sums g's columns (the
// bias gradient), against the plain path — the same products bit for bit, the sums those of float64
// to float32 rounding, the same bits twice — for row counts off the 16- and 128-row grids and column
// counts off the 64-column tile, bf16 and float32 gradients.
TEST(Fp8Cuda, GradientCastSumsTheBiasGradient) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::manual_seed(8);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 16}, {37, 48}, {129, 80}, {300, 1280}, {2053, 3840}};
  for (auto [rows, cols] : shapes)
    for (auto dt : {torch::kBFloat16, torch::kFloat32}) {
      const int64_t K = 32;
      const auto g = (torch::randn({rows, cols}) + 0.5).to(dt).cuda();  // a mean, so the sums are not ~0
      const auto a = model::to_fp8(torch::randn({rows, K}).cuda(), torch::kFloat8_e4m3fn, model::Fp8Layout::both, kPlain);
      const auto w = model::to_fp8(torch::randn({cols, K}).cuda(), torch::kFloat8_e4m3fn, model::Fp8Layout::both, kPlain);
      const auto f = model::fp8_grads(g, a, w, dt, kFused), p = model::fp8_grads(g, a, w, dt, kPlain);
      const std::string what = c10::str(rows, "x", cols, " ", dt);
      EXPECT_TRUE(torch::equal(f.input, p.input)) << what;
      EXPECT_TRUE(torch::equal(f.weight, p.weight)) << what;
      ASSERT_EQ(f.bias.scalar_type(), torch::kFloat32) << what;
      ASSERT_EQ(f.bias.sizes(), (std::vector<int64_t>{cols})) << what;
      const auto ref = f64(g).sum(0), scale = f64(g).abs().sum(0) + 1.0;
      EXPECT_LT(((f64(f.bias) - ref).abs() / scale).max().item<double>(), 1e-6) << what;
      EXPECT_TRUE(torch::equal(f.bias, model::fp8_grads(g, a, w, dt, kFused).bias)) << what << ": not deterministic";
    }
}

// CUDA, bf16 autocast: the fp8 linear and adaLN products on the fused path (cast kernels, the bias
// gradient summed by the gradient's cast) against the plain path: the same casts, so the same products bit for bit; the bias
// gradient to float32 summation order.
TEST(Fp8Cuda, FusedLinearEqualsThePlainOne) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  torch::manual_seed(7);
  torch::nn::Linear l(256, 768);
  l->to(torch::kCUDA);
  const auto x0 = torch::randn({4, 258, 256}, torch::kCUDA).to(torch::kBFloat16);
  const auto probe = torch::randn({4, 258, 768}, torch::kCUDA);
  auto run = [&](model::OpPath path) {
    auto x = x0.detach().requires_grad_(true);
    l->weight.mutable_grad() = l->bias.mutable_grad() = torch::Tensor();
    torch::Tensor y;
    {
      Autocast ac(true, torch::kCUDA, torch::kBFloat16);
      y = model::linear(*l, x, path, kFp8);
    }
    (y.to(torch::kFloat32) * probe).sum().backward();
    return std::vector<torch::Tensor>{y.detach(), x.grad(), l->weight.grad().clone(), l->bias.grad().clone()};
  };
  const auto f = run(kFused), p = run(kPlain);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(f[i], p[i])) << "item " << i;
  EXPECT_EQ(f[2].scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(f[3], p[3], 1e-5, 1e-5));
  // the adaLN products (H = 256, 6H rows): the same way
  torch::nn::Linear ada(256, 6 * 256);
  ada->to(torch::kCUDA);
  auto run_ada = [&](model::OpPath path) {
    auto x = x0.detach().requires_grad_(true);
    ada->weight.mutable_grad() = ada->bias.mutable_grad() = torch::Tensor();
    torch::Tensor y;
    {
      Autocast ac(true, torch::kCUDA, torch::kBFloat16);
      const auto m = model::adaln_split6(*ada, x, /*training=*/true, path, kFp8);
      y = torch::cat({m[0], m[1], m[2], m[3], m[4], m[5]}, -1);
    }
    (y.to(torch::kFloat32) * torch::cat({probe, probe}, -1)).sum().backward();
    return std::vector<torch::Tensor>{y.detach(), x.grad(), ada->weight.grad().clone(), ada->bias.grad().clone()};
  };
  const auto fa = run_ada(kFused), pa = run_ada(kPlain);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(fa[i], pa[i])) << "adaLN item " << i;
  EXPECT_TRUE(torch::allclose(fa[3], pa[3], 1e-5, 1e-5));
}

// CUDA, a bf16-autocast training step with fp8 on either path near the bf16 step without it.
TEST(Fp8Cuda, Bf16StepWithFp8NearItsTwin) {
  if (!have_kernels()) GTEST_SKIP() << "no CUDA kernels or device";
  EXPECT_NO_THROW(model::check_fp8_device(torch::kCUDA, "training.fp8"));  // a Hopper GPU: no refusal
  EXPECT_FALSE(gpu::device_kind(torch::kCUDA).name.empty());
  auto s = test_support::small_cuda_step(128, 4);
  auto [l16, g16] = s.step(true);
  s.g->use_fp8(true);
  for (auto path : {kFused, kPlain}) {
    s.g->use_path(path);
    auto [l8, g8] = s.step(true);
    EXPECT_NE(l8, l16);
    EXPECT_NEAR(l8, l16, 0.02 * l16) << static_cast<int>(path);
    EXPECT_GT(torch::cosine_similarity(g8, g16, 0).item<double>(), 0.98) << static_cast<int>(path);
  }
  s.g->use_fp8(false);
  s.g->use_path(kFused);
}
