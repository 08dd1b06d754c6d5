// model/ops/fp8: the fp8 products of training.fp8, on the CPU (LibTorch's emulated scaled matmul,
// the same arithmetic the fp8 tensor cores do: products of the rounded operands summed in float32).
// The scales are checked against their definition, the products against float64 products of the
// dequantised operands (tight: proves each scale is applied once, on the right side) and of the
// exact ones (loose: fp8 rounding), and the generator's step against its bf16/fp32 twin.
#include <gtest/gtest.h>

#include "model/ops/block_ops.h"
#include "model/ops/fp8.h"
#include "small_step.h"

using namespace rar;

namespace {

torch::Tensor f64(const torch::Tensor& t) { return t.to(torch::kFloat64); }
torch::Tensor dequant(const model::Fp8Tensor& q) { return f64(q.data) * f64(q.scale_inv); }
// ||a - b|| / ||b||
double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return (f64(a) - f64(b)).norm().item<double>() / f64(b).norm().item<double>();
}

}  // namespace

TEST(Fp8, ScalesMapTheLargestMagnitudeOntoTheFormat) {
  torch::manual_seed(1);
  for (double mag : {1e-5, 1.0, 3e4})
    for (auto fmt : {torch::kFloat8_e4m3fn, torch::kFloat8_e5m2}) {
      const auto t = mag * torch::randn({37, 48});
      const auto q = model::to_fp8(t, fmt);
      ASSERT_EQ(q.data.scalar_type(), fmt);
      const double top = fmt == torch::kFloat8_e4m3fn ? 448.0 : 57344.0;
      EXPECT_EQ(f64(q.data).abs().max().item<double>(), top) << mag;  // the largest lands on the largest
      EXPECT_TRUE(torch::isfinite(f64(q.data)).all().item<bool>());
      // every element within half a step of its format (3 resp. 2 mantissa bits) of its value,
      // or below the smallest normal's resolution
      const double step = fmt == torch::kFloat8_e4m3fn ? 1.0 / 16 : 1.0 / 8;
      const auto err = (dequant(q) - f64(t)).abs();
      const auto bound = step * f64(t).abs() + 2 * t.abs().max().item<double>() / top * std::pow(2.0, -6);
      EXPECT_TRUE((err <= bound).all().item<bool>()) << mag;
    }
  const auto z = model::to_fp8(torch::zeros({16, 16}), torch::kFloat8_e4m3fn);  // all zeros: zeros, finite scale
  EXPECT_EQ(f64(z.data).abs().max().item<double>(), 0.0);
  EXPECT_TRUE(std::isfinite(z.scale_inv.item<double>()));
}

// A row count that is no multiple of 16 (3·7): the padded rows change nothing.
TEST(Fp8, LinearIsTheProductOfItsRoundedOperandsBothWays) {
  torch::manual_seed(2);
  const int64_t K = 64, N = 48;
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto x = (3 * torch::randn({3, 7, K})).to(dt).requires_grad_(true);
    auto w = (0.1 * torch::randn({N, K})).requires_grad_(true);
    auto b = torch::randn({N}).requires_grad_(true);
    auto y = model::fp8_linear(x, w, b);
    ASSERT_EQ(y.scalar_type(), dt);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{3, 7, N}));
    const auto g = torch::randn({3, 7, N}).to(dt);
    y.backward(g);
    const double tight = dt == torch::kFloat32 ? 1e-6 : 8e-3;  // the output's own rounding
    // forward: the float64 product of the e4m3 operands, plus the bias
    const auto xq = model::to_fp8(x.detach().reshape({-1, K}), torch::kFloat8_e4m3fn);
    const auto wq = model::to_fp8(w.detach(), torch::kFloat8_e4m3fn);
    const auto ref_y = dequant(xq).mm(dequant(wq).t()) + f64(b.detach().to(dt));
    EXPECT_LT(rel(y.detach().reshape({-1, N}), ref_y), tight);
    EXPECT_LT(rel(y.detach().reshape({-1, N}), f64(x.detach()).reshape({-1, K}).mm(f64(w.detach()).t()) + f64(b.detach())),
              0.1);  // fp8 rounding of both operands
    // backward: the e5m2 gradient against the e4m3 operands
    const auto gq = model::to_fp8(g.reshape({-1, N}), torch::kFloat8_e5m2);
    EXPECT_LT(rel(x.grad().reshape({-1, K}), dequant(gq).mm(dequant(wq))), tight);
    EXPECT_EQ(w.grad().scalar_type(), torch::kFloat32);
    EXPECT_LT(rel(w.grad(), dequant(gq).t().mm(dequant(xq))), 1e-6);
    EXPECT_LT(rel(b.grad(), f64(g).reshape({-1, N}).sum(0)), 1e-6);
    EXPECT_LT(rel(w.grad(), f64(g).reshape({-1, N}).t().mm(f64(x.detach()).reshape({-1, K}))), 0.2);
  }
}

// The MLP tail (GELU, dropout, fc2 in one op that keeps only u and the mask) with fc2 in fp8:
// against the float64 products of the rounded operands, its input's gradient through GELU and the
// mask included. 21 rows again (padding).
TEST(Fp8, MlpTailIsTheProductOfItsRoundedOperandsBothWays) {
  torch::manual_seed(3);
  const int64_t K = 64, N = 32;
  const double p = 0.25;
  auto u = torch::randn({3, 7, K}).requires_grad_(true);
  auto w = (0.1 * torch::randn({N, K})).requires_grad_(true);
  auto b = torch::randn({N}).requires_grad_(true);
  const auto bits = model::pack_bits(torch::rand({3, 7, K}).ge(p));
  auto y = model::gelu_dropout_linear_saving(u, bits, p, w, b, model::OpPath::plain, /*fp8=*/true);
  const auto g = torch::randn({3, 7, N});
  y.backward(g);
  const auto keep = f64(model::unpack_bits(bits, {3, 7, K})).reshape({-1, K}) / (1 - p);
  const auto a = (at::gelu(u.detach()).reshape({-1, K}) * keep.to(torch::kFloat32));
  const auto aq = model::to_fp8(a, torch::kFloat8_e4m3fn), wq = model::to_fp8(w.detach(), torch::kFloat8_e4m3fn);
  EXPECT_LT(rel(y.detach().reshape({-1, N}), dequant(aq).mm(dequant(wq).t()) + f64(b.detach())), 1e-6);
  const auto gq = model::to_fp8(g.reshape({-1, N}), torch::kFloat8_e5m2);
  const auto ga = (dequant(gq).mm(dequant(wq)) * keep).to(torch::kFloat32).view({3, 7, K});
  EXPECT_LT(rel(u.grad(), at::gelu_backward(ga, u.detach())), 1e-5);
  EXPECT_LT(rel(w.grad(), dequant(gq).t().mm(dequant(aq))), 1e-6);
  EXPECT_LT(rel(b.grad(), f64(g).reshape({-1, N}).sum(0)), 1e-6);
  // and near the float32 op (fp8 rounding)
  auto u2 = u.detach().requires_grad_(true);
  auto y32 = model::gelu_dropout_linear_saving(u2, bits, p, w.detach(), b.detach(), model::OpPath::plain, false);
  EXPECT_LT(rel(y.detach(), y32.detach()), 0.1);
}

TEST(Fp8, ProductsOfOtherShapesStayInTheModelsDtype) {
  torch::nn::Linear odd(40, 48);  // K = 40: no multiple of 16
  const auto x = torch::randn({2, 5, 40});
  EXPECT_FALSE(model::fp8_product_fits(x, odd->weight));
  EXPECT_TRUE(torch::equal(model::linear(*odd, x, model::OpPath::plain, true), at::linear(x, odd->weight, odd->bias)));
}

// The generator with training.fp8: in training its step stays near the float32 step's loss and
// gradients, a recomputed block repeats its first forward exactly (fp8 is decided by training
// mode, so the recomputation under gradients takes the same products as the forward without),
// and in evaluation the model computes as without fp8.
TEST(Fp8, GeneratorStepNearItsTwinAndRecomputationRepeatsIt) {
  auto s = test_support::small_step(32, 2, torch::kCPU);
  auto [l32, g32] = s.step(false);
  s.g->use_fp8(true);
  auto [l8, g8] = s.step(false);
  EXPECT_NE(l8, l32);  // the products did change
  EXPECT_NEAR(l8, l32, 0.02 * std::abs(l32));
  EXPECT_GT(torch::cosine_similarity(g8, g32, 0).item<double>(), 0.98);
  s.g->recompute_layers = 2;
  auto [lr, gr] = s.step(false);
  EXPECT_EQ(lr, l8);
  // the gradients add up in another order with recomputed blocks: the same products to float32
  // rounding, far below what fp8 changes
  EXPECT_LT(rel(gr, g8), 1e-5) << "fp8 vs float32: " << rel(g8, g32);
  EXPECT_GT(rel(g8, g32), 1e-3);
  s.g->recompute_layers = 0;
  s.g->eval();
  torch::NoGradGuard ng;
  auto orders = torch::arange(64).expand({8, 64});
  const auto with = s.g->forward(s.tokens, s.labels, orders);
  s.g->use_fp8(false);
  EXPECT_TRUE(torch::equal(with, s.g->forward(s.tokens, s.labels, orders)));
}
