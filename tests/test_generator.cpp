// The RAR generator: exact equivalence with the reference code (ref_nll.npy), config inference,
// parameter names and counts, the published init, the KV-cache path against the full forward,
// and strict loading.
#include <set>

#include <torch/torch.h>

#include "eval/nll.h"
#include "helpers.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "model/vqgan.h"
#include "model/weights.h"
#include "sampling/static_decode.h"
#include "util/device.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;

namespace {

struct Reference {
  torch::Tensor tokens = io::read_npy(shared_ref("ref_tokens.npy"));
  torch::Tensor classes = io::read_npy(shared_ref("ref_classes.npy"));
  torch::Tensor orders = io::read_npy(shared_ref("ref_orders.npy"));
  torch::Tensor nll = io::read_npy(shared_ref("ref_nll.npy"));
};

void expect_rel_close(const torch::Tensor& got, const torch::Tensor& want, double rel) {
  ASSERT_EQ(got.sizes(), want.sizes());
  for (int64_t i = 0; i < got.numel(); ++i) {
    double g = got[i].item<double>(), w = want[i].item<double>();
    EXPECT_LE(std::abs(g - w), rel * std::abs(w)) << "index " << i << ": " << g << " vs " << w;
  }
}

model::GeneratorConfig tiny_config() {
  model::GeneratorConfig c;
  c.hidden = 32, c.layers = 2, c.heads = 4, c.mlp = 64, c.codebook = 16, c.classes = 3, c.seq_len = 9;
  return c;
}

}  // namespace

TEST(Generator, ReproducesReferenceNllInAllThreeSettings) {
  Reference ref;
  auto g = model::load_generator(shared_ref("tiny_rar.bin"));
  auto raster = eval::sequence_nll(g.model, ref.tokens, ref.classes, {}, false);
  auto permuted = eval::sequence_nll(g.model, ref.tokens, ref.classes, ref.orders, false);
  auto null = eval::sequence_nll(g.model, ref.tokens, ref.classes, {}, true);
  expect_rel_close(raster, ref.nll[0], 1e-5);
  expect_rel_close(permuted, ref.nll[1], 1e-5);
  expect_rel_close(null, ref.nll[2], 1e-5);
  // The README's printed values for row 0, independently of our npy reader.
  expect_rel_close(raster, torch::tensor({7.0237815, 6.9917118, 6.9981713, 7.0341908}, torch::kFloat64), 1e-6);
}

TEST(Generator, ExplicitIdentityOrderEqualsRaster) {
  Reference ref;
  auto g = model::load_generator(shared_ref("tiny_rar.bin"));
  auto identity = torch::arange(256, torch::kInt64).repeat({4, 1});
  torch::NoGradGuard ng;
  auto cond = g.model->condition_tokens(ref.classes);
  auto a = g.model->forward(ref.tokens, cond), b = g.model->forward(ref.tokens, cond, identity);
  EXPECT_TRUE(torch::allclose(a, b, 0, 0));
}

TEST(Generator, BatchSplitDoesNotChangeScores) {
  Reference ref;
  auto g = model::load_generator(shared_ref("tiny_rar.bin"));
  auto whole = eval::sequence_nll(g.model, ref.tokens, ref.classes, ref.orders, false, 64);
  auto split = eval::sequence_nll(g.model, ref.tokens, ref.classes, ref.orders, false, 3);
  EXPECT_TRUE(torch::allclose(whole, split, 1e-6, 0));
}

TEST(GeneratorConfig, InferredFromReferenceCheckpoint) {
  auto c = model::GeneratorConfig::infer(io::read_checkpoint(shared_ref("tiny_rar.bin")));
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.layers, 2);
  EXPECT_EQ(c.heads, 4);
  EXPECT_EQ(c.mlp, 256);
  EXPECT_EQ(c.codebook, 1024);
  EXPECT_EQ(c.classes, 10);
  EXPECT_EQ(c.seq_len, 256);
}

TEST(GeneratorConfig, ParameterNamesAreTheStateDictKeys) {
  auto sd = io::read_checkpoint(shared_ref("tiny_rar.bin"));
  model::Generator g(model::GeneratorConfig::infer(sd));
  std::set<std::string> ours, theirs(sd.names().begin(), sd.names().end());
  for (auto& p : g->named_parameters()) ours.insert(p.key());
  EXPECT_EQ(ours, theirs);
  EXPECT_EQ(g->named_buffers().size(), 0u);
}

TEST(GeneratorConfig, ParameterCountFormulaMatchesModules) {
  for (auto cfg : {tiny_config(), model::GeneratorConfig::preset("rar_b")}) {
    model::Generator g(cfg);
    int64_t n = 0;
    for (auto& p : g->parameters()) n += p.numel();
    EXPECT_EQ(n, cfg.parameter_count());
  }
}

TEST(GeneratorConfig, PresetsHaveThePublishedSizes) {
  // Published: 261M, 462M, 955M, 1.5B.
  auto millions = [](const char* p) { return std::lround(model::GeneratorConfig::preset(p).parameter_count() / 1e6); };
  EXPECT_EQ(millions("rar_b"), 261);
  EXPECT_EQ(millions("rar_l"), 462);
  EXPECT_EQ(millions("rar_xl"), 955);
  EXPECT_NEAR(model::GeneratorConfig::preset("rar_xxl").parameter_count() / 1e9, 1.5, 0.01);
  EXPECT_RAR_ERROR(model::GeneratorConfig::preset("rar_s"), "unknown generator preset 'rar_s'");
}

TEST(GeneratorConfig, JsonRoundTripAndValidation) {
  auto c = tiny_config();
  auto back = model::GeneratorConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  auto j = c.to_json();
  j["num_attention_heads"] = 5;
  EXPECT_RAR_ERROR(model::GeneratorConfig::from_json(j), "not divisible by 5 heads");
}

TEST(Generator, PublishedInitialisation) {
  torch::manual_seed(0);
  model::Generator g(model::GeneratorConfig::preset("rar_b"));
  EXPECT_EQ(g->cls_token.abs().max().item<float>(), 0.f);
  for (auto& b : g->block_list) {
    auto* lin = b->adaLN_modulation[1]->as<torch::nn::Linear>();
    EXPECT_EQ(lin->weight.abs().max().item<float>(), 0.f);
    EXPECT_EQ(lin->bias.abs().max().item<float>(), 0.f);
    EXPECT_EQ(b->norm1->weight.min().item<float>(), 1.f);
    EXPECT_EQ(b->attn->qkv->bias.abs().max().item<float>(), 0.f);
  }
  // Every other weight and table is N(0, 0.02²): timm's trunc_normal_ cuts at ±2, 100σ away, so
  // it is a plain normal — mean 0, std 0.02, normal tails (kurtosis 3, nothing beyond 7σ) — except
  // for PyTorch's own quirk, kept for exactness: its inverse-CDF sampler draws uniform(-1, 1), which
  // returns exactly -1 once in 2^24 draws, and erfinv(-1) = -inf is clamped to the bound -2. A
  // uniform, a wrong std or a missed tensor fails here. Biases 0, LayerNorm weights 1.
  auto normal_002 = [](const torch::Tensor& t, const std::string& what) {
    auto all = t.detach().to(torch::kFloat64).flatten();
    auto inside = all.abs() < 2.0;
    const int64_t at_bound = all.numel() - inside.sum().item<int64_t>();
    EXPECT_LE(at_bound, 2 + all.numel() / (int64_t(1) << 20)) << what;  // ~N/2^24 expected
    EXPECT_EQ(at_bound, all.eq(-2.0).sum().item<int64_t>()) << what;    // only the -1 draw, only -2
    auto x = all.masked_select(inside);
    const double mean = x.mean().item<double>(), sd = x.std().item<double>();
    const double kurt = ((x - mean).pow(4).mean() / std::pow(sd, 4)).item<double>();
    EXPECT_NEAR(mean, 0.0, 0.002) << what;
    EXPECT_NEAR(sd, 0.02, 0.001) << what;
    EXPECT_NEAR(kurt, 3.0, 0.3) << what;
    EXPECT_LT(x.abs().max().item<double>(), 7 * 0.02) << what;
  };
  int64_t normals = 0;
  for (const auto& item : g->named_parameters()) {
    const auto& n = item.key();
    const auto& p = item.value();
    if (n.find("adaLN_modulation") != std::string::npos || n == "cls_token") continue;  // zeroed (above)
    if (n.find("norm") != std::string::npos) {
      EXPECT_EQ(p.min().item<float>(), n.find(".weight") != std::string::npos ? 1.f : 0.f) << n;
      EXPECT_EQ(p.max().item<float>(), n.find(".weight") != std::string::npos ? 1.f : 0.f) << n;
    } else if (n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0) {
      EXPECT_EQ(p.abs().max().item<float>(), 0.f) << n;
    } else {
      normal_002(p, n);
      ++normals;
    }
  }
  // per block qkv, proj, fc1, fc2; lm_head, embeddings, the three position/timestep tables
  EXPECT_EQ(normals, 4 * g->cfg.layers + 5);
}

// Feeding tokens one at a time through the KV cache gives the logits of the full forward.
static void check_cache_against_forward(model::Generator& g, const torch::Tensor& order) {
  torch::NoGradGuard ng;
  const int64_t B = 3, S = g->cfg.seq_len;
  auto tokens = torch::randint(0, g->cfg.codebook, {B, S}, torch::kInt64);
  auto cond = g->condition_tokens(torch::tensor({0, 2, 1}, torch::kInt64));
  auto full = g->forward(tokens, cond, order.unsqueeze(0).expand({B, S}).contiguous());  // [B,S+1,V]
  auto cache = g->make_cache(B, S + 1);
  auto tau = order.accessor<int64_t, 1>();
  auto logits = g->decode_prefill(cond, tau[0], cache);
  EXPECT_TRUE(torch::allclose(logits, full.select(1, 0), 1e-4, 1e-5)) << "step 0";
  for (int64_t t = 1; t < S; ++t) {
    auto token = tokens.select(1, tau[t - 1]);
    logits = g->decode_step(token, t, tau[t - 1], tau[t], cond, cache);
    EXPECT_TRUE(torch::allclose(logits, full.select(1, t), 1e-4, 1e-5)) << "step " << t;
  }
  EXPECT_EQ(cache.length, S + 1);
}

// The static-shape step (step index on the device, masked attention over the whole cache, adaLN
// products gathered from per-batch tables) gives the logits of the full forward, for a guided
// batch with repeated classes: with tables for every condition, with the null class's only (the
// class rows' adaLN as matmuls: the table budget exceeded), and after a new batch is written in place.
TEST(Generator, StaticDecodeStepMatchesFullForward) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  torch::NoGradGuard ng;
  torch::manual_seed(2);
  const int64_t S = g->cfg.seq_len;
  auto order = torch::randperm(S, torch::kInt64);
  std::vector<int64_t> tau(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + S);
  auto check_batch = [&](sampling::StaticDecode& s, const torch::Tensor& classes, const std::string& what) {
    const int64_t B = classes.size(0);
    auto cond = torch::cat({g->condition_tokens(classes), torch::full({B}, g->cfg.null_class_token(), torch::kInt64)});
    auto tokens = torch::randint(0, g->cfg.codebook, {2 * B, S}, torch::kInt64);
    auto full = g->forward(tokens, cond, order.unsqueeze(0).expand({2 * B, S}).contiguous());
    auto cache = sampling::make_zeroed_cache(*g, 2 * B, S + 1);
    g->decode_prefill(cond, tau[0], cache);
    for (int64_t t = 1; t < S; t += 17) {  // a spread of steps; each writes its own slot
      for (int64_t u = (t == 1 ? 1 : t - 16); u <= t; ++u) {
        s.token.copy_(tokens.select(1, tau[u - 1]));
        s.step.fill_(u);
        auto logits = sampling::decode_step_static(*g, s, cache);
        if (u == t) EXPECT_TRUE(torch::allclose(logits, full.select(1, t), 1e-4, 1e-5)) << what << " step " << t;
      }
    }
  };
  auto classes = torch::tensor({3, 3, 7, 3}, torch::kInt64);
  for (int64_t budget : {int64_t(1) << 30, int64_t(0)}) {
    auto s = sampling::make_static_decode(*g, g->condition_tokens(classes), 4, tau, S + 1, budget);
    EXPECT_EQ(s.table_rows.size(0), budget ? 8 : 4) << "rows served by the tables";
    EXPECT_EQ(s.table_head.size(0), (budget ? 3 : 1) * (S + 2)) << "distinct conditions: 3, 7 and null";
    check_batch(s, classes, budget ? "all tables" : "null table only");
    // another batch with as many distinct classes: updated in place; one with more: refused
    auto other = torch::tensor({5, 1, 1, 5}, torch::kInt64);
    ASSERT_TRUE(sampling::update_static_decode(*g, s, g->condition_tokens(other), budget));
    check_batch(s, other, budget ? "updated tables" : "updated, null table only");
    EXPECT_EQ(sampling::update_static_decode(*g, s, g->condition_tokens(torch::tensor({0, 1, 2, 4}, torch::kInt64)), budget),
              budget == 0);
  }
}

// A window of several steps in one call (speculative decoding) gives the full forward's logits at
// those steps; rewinding the cache and feeding other tokens at the same slots replaces them.
TEST(Generator, DecodeWindowMatchesFullForwardAndRewinds) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  const int64_t B = 2, S = g->cfg.seq_len;
  auto order = torch::randperm(S, torch::kInt64);
  std::vector<int64_t> tau(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + S);
  auto cond = g->condition_tokens(torch::tensor({4, 9}, torch::kInt64));
  auto a = torch::randint(0, g->cfg.codebook, {B, S}, torch::kInt64), b = a.clone();
  b.index_fill_(1, order.narrow(0, 60, S - 60), 7);  // b differs from a after step 60
  auto orders = order.unsqueeze(0).expand({B, S}).contiguous();
  auto full_a = g->forward(a, cond, orders), full_b = g->forward(b, cond, orders);
  auto cache = g->make_cache(B, S + 1);
  g->decode_prefill(cond, tau[0], cache);
  // window [t, t+W) feeds x[τ_t] .. x[τ_{t+W-1}] (0-based: columns tau[t-1] .. tau[t+W-2])
  auto window = [&](const torch::Tensor& x, int64_t t, int64_t W) {
    std::vector<int64_t> pos(tau.begin() + t - 1, tau.begin() + t - 1 + W), next(tau.begin() + t, tau.begin() + t + W);
    cache.length = t + 1;
    return g->decode_window(x.index_select(1, order.narrow(0, t - 1, W)), t, pos, next, cond, cache);
  };
  for (auto [t, W] : std::vector<std::pair<int64_t, int64_t>>{{1, 16}, {17, 1}, {18, 40}, {58, 9}}) {
    auto l = window(a, t, W);
    ASSERT_EQ(l.sizes(), (std::vector<int64_t>{B, W, g->cfg.codebook}));
    EXPECT_TRUE(torch::allclose(l, full_a.narrow(1, t, W), 1e-4, 1e-5)) << "steps " << t << ".." << t + W - 1;
  }
  // steps 58..66 were fed a's tokens; rewind to step 61 and feed b's (different from step 61 on)
  auto l = window(b, 61, S - 61);
  EXPECT_TRUE(torch::allclose(l, full_b.narrow(1, 61, S - 61), 1e-4, 1e-5));
  EXPECT_FALSE(torch::allclose(l, full_a.narrow(1, 61, S - 61), 1e-4, 1e-5));
  EXPECT_EQ(cache.length, S + 1);
  cache.length = S;
  EXPECT_RAR_ERROR(g->decode_window(a.narrow(1, 0, 2), S - 1, {0, 1}, {1, 2}, cond, cache), "capacity");
  EXPECT_RAR_ERROR(g->decode_window(a.narrow(1, 0, 2), 3, {0, 1}, {1, 2}, cond, cache), "cache holding");
  EXPECT_RAR_ERROR(g->decode_window(a.narrow(1, 0, 2), S - 1, {0}, {1}, cond, cache), "needs 2 positions");
}

// The static-shape window (speculative decoding's graph-capturable call) gives the full forward's
// logits at the window's real steps, near the end too (columns past the last step are ignored),
// with every row at the same step or each at its own, with the adaLN tables serving every row,
// only the null rows, or no row (unguided, no budget).
TEST(Generator, StaticDecodeWindowMatchesFullForward) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  const int64_t S = g->cfg.seq_len, W = 16;
  auto order = torch::randperm(S, torch::kInt64);
  std::vector<int64_t> tau(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + S);
  auto classes = torch::tensor({3, 3, 7}, torch::kInt64);
  for (auto [null_rows, budget] : std::vector<std::pair<int64_t, int64_t>>{{3, int64_t(1) << 30}, {3, 0}, {0, 0}}) {
    const int64_t R = 3 + null_rows;
    auto cond = g->condition_tokens(classes);
    if (null_rows) cond = torch::cat({cond, torch::full({null_rows}, g->cfg.null_class_token(), torch::kInt64)});
    auto tokens = torch::randint(0, g->cfg.codebook, {R, S}, torch::kInt64);
    auto full = g->forward(tokens, cond, order.unsqueeze(0).expand({R, S}).contiguous());
    auto s = sampling::make_static_decode(*g, g->condition_tokens(classes), null_rows, tau, S + W, budget, W);
    auto cache = sampling::make_zeroed_cache(*g, R, S + W);
    g->decode_prefill(cond, tau[0], cache);
    // in generation order: column k = x[τ_{k+1}]; padded past the end
    auto gen = torch::cat({tokens.index_select(1, order), torch::zeros({R, W}, torch::kInt64)}, 1);
    for (int64_t t = 1; t < S; t += W) {
      s.window.copy_(gen.narrow(1, t - 1, W));
      s.window_step.fill_(t);
      auto l = sampling::decode_window_static(*g, s, cache);
      ASSERT_EQ(l.sizes(), (std::vector<int64_t>{R, W, g->cfg.codebook}));
      const int64_t real = std::min(W, S - t);
      EXPECT_TRUE(torch::allclose(l.narrow(1, 0, real), full.narrow(1, t, real), 1e-4, 1e-5))
          << "steps " << t << ".." << t + real - 1 << ", null rows " << null_rows << ", table budget " << budget;
    }
    // every row at a step of its own (the cache holds every row's real tokens by now)
    std::vector<int64_t> at(R);
    for (int64_t r = 0; r < R; ++r) {
      at[r] = 1 + (37 * r + 5) % (S - W);
      s.window[r].copy_(gen[r].narrow(0, at[r] - 1, W));
    }
    s.window_step.copy_(torch::tensor(at, torch::kInt64));
    auto l = sampling::decode_window_static(*g, s, cache);
    for (int64_t r = 0; r < R; ++r)
      EXPECT_TRUE(torch::allclose(l[r], full[r].narrow(0, at[r], W), 1e-4, 1e-5))
          << "row " << r << " at step " << at[r] << ", null rows " << null_rows << ", table budget " << budget;
  }
}

TEST(Generator, KvCacheDecodingMatchesFullForward) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  torch::manual_seed(1);
  check_cache_against_forward(g, torch::arange(256, torch::kInt64));
  check_cache_against_forward(g, torch::randperm(256, torch::kInt64));
}

TEST(Generator, TrainingModeAppliesDropoutAndBackpropagates) {
  torch::manual_seed(2);
  model::Generator g(tiny_config());
  for (auto& p : g->parameters()) p.data().add_(torch::randn_like(p) * 0.05);  // leave adaLN-zero
  auto tokens = torch::randint(0, 16, {2, 9}, torch::kInt64);
  auto cond = g->condition_tokens(torch::tensor({0, 1}, torch::kInt64));
  g->eval();
  auto a = g->forward(tokens, cond), b = g->forward(tokens, cond);
  EXPECT_TRUE(a.equal(b));
  g->train();
  auto c = g->forward(tokens, cond);
  EXPECT_FALSE(torch::allclose(a, c));
  c.sum().backward();
  EXPECT_TRUE(g->pos_embed.grad().defined());
  EXPECT_GT(g->block_list[0]->adaLN_modulation[1]->as<torch::nn::Linear>()->weight.grad().abs().sum().item<float>(), 0);
}

TEST(Generator, SafetensorsRoundTripKeepsConfigAndScores) {
  TempDir dir;
  Reference ref;
  auto g = model::load_generator(shared_ref("tiny_rar.bin"));
  model::save_generator(dir / "g.safetensors", g.model);
  auto sd = io::read_checkpoint(dir / "g.safetensors");
  ASSERT_TRUE(sd.metadata.count(model::kGeneratorConfigKey));
  auto h = model::load_generator(dir / "g.safetensors");
  EXPECT_EQ(h.cfg.to_json(), g.cfg.to_json());
  auto a = eval::sequence_nll(g.model, ref.tokens, ref.classes, {}, false);
  auto b = eval::sequence_nll(h.model, ref.tokens, ref.classes, {}, false);
  EXPECT_TRUE(a.equal(b));
}

TEST(Generator, StrictLoadingNamesWhatIsWrong) {
  auto sd = io::read_checkpoint(shared_ref("tiny_rar.bin"));
  auto cfg = model::GeneratorConfig::infer(sd);
  {
    model::Generator g(cfg);
    auto bad = sd;
    bad.set("blocks.0.attn.proj.weight", torch::zeros({64, 65}));
    bad.set("extra.weight", torch::zeros({1}));
    EXPECT_RAR_ERROR(model::load_weights(*g, bad, "x.bin"), "unexpected 1: 'extra.weight'");
    EXPECT_RAR_ERROR(model::load_weights(*g, bad, "x.bin"), "blocks.0.attn.proj.weight [64, 65] (expected [64, 64])");
  }
  {
    model::Generator g(cfg);
    io::StateDict partial;
    for (const auto& n : sd.names())
      if (n != "lm_head.bias") partial.set(n, sd.at(n));
    EXPECT_RAR_ERROR(model::load_weights(*g, partial, "x.bin"), "missing 1: 'lm_head.bias'");
  }
  {
    model::Generator g(cfg);
    auto bad = sd;
    bad.set("cls_token", torch::zeros({1, 1, 64}, torch::kInt64));
    EXPECT_RAR_ERROR(model::load_weights(*g, bad, "x.bin"), "cls_token of type Long (expected floating point)");
  }
  EXPECT_RAR_ERROR(model::load_generator(fixture("pt1x_nested.pt")), "not a RAR generator checkpoint");
}

TEST(Generator, ScoreInputsAreValidated) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin"));
  auto tokens = torch::zeros({2, 256}, torch::kInt64);
  auto classes = torch::zeros({2}, torch::kInt64);
  EXPECT_RAR_ERROR(eval::sequence_nll(g.model, torch::zeros({2, 255}, torch::kInt64), classes, {}, false),
                   "tokens: expected shape [N,256]");
  EXPECT_RAR_ERROR(eval::sequence_nll(g.model, tokens + 1024, classes, {}, false), "ids must lie in [0, 1024)");
  EXPECT_RAR_ERROR(eval::sequence_nll(g.model, tokens, classes + 10, {}, false), "classes: ids must lie in [0, 10)");
  auto orders = torch::arange(256, torch::kInt64).repeat({2, 1});
  orders[1][5] = 4;
  EXPECT_RAR_ERROR(eval::sequence_nll(g.model, tokens, classes, orders, false), "must be a permutation");
}

// bf16 weights and activations: the deviation from fp32 is reported and bounded.
static double max_rel_dev(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs() / b.abs()).max().item<double>();
}

TEST(Generator, Bf16ScoresStayCloseToFp32OnCpu) {
  Reference ref;
  auto g = model::load_generator(shared_ref("tiny_rar.bin"), torch::kCPU, torch::kBFloat16);
  auto nll = eval::sequence_nll(g.model, ref.tokens, ref.classes, ref.orders, false);
  double dev = max_rel_dev(nll, ref.nll[1]);
  std::printf("bf16 (CPU) max relative NLL deviation from the reference: %.2e\n", dev);
  EXPECT_LT(dev, 1e-2);
}

TEST(GeneratorCuda, ReproducesReferenceNllOnGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device in this build or machine";
  Reference ref;
  parse_precision("fp32");  // TF32 off
  auto g = model::load_generator(shared_ref("tiny_rar.bin"), torch::kCUDA, torch::kFloat32);
  expect_rel_close(eval::sequence_nll(g.model, ref.tokens, ref.classes, {}, false), ref.nll[0], 1e-5);
  expect_rel_close(eval::sequence_nll(g.model, ref.tokens, ref.classes, ref.orders, false), ref.nll[1], 1e-5);
  expect_rel_close(eval::sequence_nll(g.model, ref.tokens, ref.classes, {}, true), ref.nll[2], 1e-5);
  auto h = model::load_generator(shared_ref("tiny_rar.bin"), torch::kCUDA, torch::kBFloat16);
  double dev = 0;
  dev = std::max(dev, max_rel_dev(eval::sequence_nll(h.model, ref.tokens, ref.classes, {}, false), ref.nll[0]));
  dev = std::max(dev, max_rel_dev(eval::sequence_nll(h.model, ref.tokens, ref.classes, ref.orders, false), ref.nll[1]));
  dev = std::max(dev, max_rel_dev(eval::sequence_nll(h.model, ref.tokens, ref.classes, {}, true), ref.nll[2]));
  std::printf("bf16 (CUDA) max relative NLL deviation from the reference: %.2e\n", dev);
  EXPECT_LT(dev, 1e-2);
}

// `--kv-cache fp8`: the static step and the plain cached step with the keys and values stored in
// fp8 e4m3 track the full forward within fp8 rounding (they do differ: the cache really is fp8),
// and most steps keep the exact arg-max token.
TEST(Generator, Fp8KvCacheTracksTheFullForward) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  const int64_t S = g->cfg.seq_len, B = 3;
  std::vector<int64_t> tau(S);
  for (int64_t i = 0; i < S; ++i) tau[i] = i;
  auto classes = torch::tensor({1, 4, 4}, torch::kInt64);
  auto cond = torch::cat({g->condition_tokens(classes), torch::full({B}, g->cfg.null_class_token(), torch::kInt64)});
  auto tokens = torch::randint(0, g->cfg.codebook, {2 * B, S}, torch::kInt64);
  auto full = g->forward(tokens, cond);
  auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
  };
  // static step
  auto s = sampling::make_static_decode(*g, g->condition_tokens(classes), B, tau, S + 1);
  auto cache = sampling::make_zeroed_cache(*g, 2 * B, S + 1, torch::kFloat8_e4m3fn);
  ASSERT_EQ(cache.k[0].scalar_type(), torch::kFloat8_e4m3fn);
  g->decode_prefill(cond, tau[0], cache);
  // plain cached step
  auto plain = g->make_cache(2 * B, S + 1, torch::kFloat8_e4m3fn);
  g->decode_prefill(cond, tau[0], plain);
  double worst = 0, worst_plain = 0;
  int64_t same = 0, steps = 0;
  for (int64_t t = 1; t < S; ++t) {
    s.token.copy_(tokens.select(1, tau[t - 1]));
    s.step.fill_(t);
    auto logits = sampling::decode_step_static(*g, s, cache);
    auto lp = g->decode_step(tokens.select(1, tau[t - 1]), t, tau[t - 1], tau[t], cond, plain);
    auto want = full.select(1, t);
    worst = std::max(worst, rel(logits, want));
    worst_plain = std::max(worst_plain, rel(lp, want));
    same += logits.argmax(-1).eq(want.argmax(-1)).sum().item<int64_t>();
    steps += 2 * B;
  }
  // (tiny_rar: 0.37% worst relative logit error, 99.7% of arg-max tokens kept)
  EXPECT_GT(worst, 1e-4) << "fp8 rounding should show";
  EXPECT_LT(worst, 0.02);
  EXPECT_LT(worst_plain, 0.02);
  EXPECT_GT(static_cast<double>(same) / steps, 0.97);
}

// The ops' path is a value each module holds (model/ops/fused.h OpPath): use_path reaches every
// module that calls an op, and the plain path gives the reference's numbers (on the CPU both
// paths are the plain one; tests/test_fused_ops.cpp compares them on the GPU).
TEST(Generator, UsePathReachesEveryModuleThatCallsAnOp) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  auto count = [&](model::OpPath p) {
    int64_t n = 0, with = 0;
    for (const auto& m : g->modules(/*include_self=*/false)) {
      const model::OpPath* path = nullptr;
      if (auto* a = m->as<model::AttentionImpl>()) path = &a->path;
      if (auto* b = m->as<model::BlockImpl>()) path = &b->path;
      if (auto* l = m->as<model::MlpImpl>()) path = &l->path;
      if (auto* f = m->as<model::FinalLayerImpl>()) path = &f->path;
      if (path) ++n, with += *path == p;
    }
    EXPECT_EQ(n, 3 * g->cfg.layers + 1);
    return with;
  };
  EXPECT_EQ(count(model::OpPath::fused), 3 * g->cfg.layers + 1);  // the default
  g->use_path(model::OpPath::plain);
  EXPECT_EQ(g->path(), model::OpPath::plain);
  EXPECT_EQ(count(model::OpPath::plain), 3 * g->cfg.layers + 1);
  auto vq = model::load_vq(shared_ref("tiny_vq.bin")).model;
  vq->use_path(model::OpPath::plain);
  int64_t modules = 0, plain = 0;
  for (const auto& m : vq->modules(false)) {
    if (auto* r = m->as<model::ResnetBlockImpl>()) ++modules, plain += r->path == model::OpPath::plain;
    if (auto* u = m->as<model::UpLevelImpl>()) ++modules, plain += u->path == model::OpPath::plain;
    if (auto* e = m->as<model::VQEncoderImpl>()) ++modules, plain += e->path == model::OpPath::plain;
    if (auto* d = m->as<model::VQDecoderImpl>()) ++modules, plain += d->path == model::OpPath::plain;
  }
  EXPECT_GT(modules, 4);
  EXPECT_EQ(plain, modules);
}
