// The sampler: greedy paths equal the reference code's, guidance schedules, the logits chain
// (temperature, top-k, top-p) including a chi-square test of the sampled frequencies, seeding,
// scan orders, and input validation.
#include <algorithm>
#include <cmath>
#include <set>

#include <torch/torch.h>

#include "helpers.h"
#include "io/npy.h"
#include "model/ops/decode_ops.h"
#include "model/weights.h"
#include "model/vqgan.h"
#include "sampling/guidance.h"
#include "sampling/logits_chain.h"
#include "sampling/orders.h"
#include "sampling/sample_job.h"
#include "sampling/sampler.h"
#include "util/error.h"
#include "util/gpu.h"

using namespace rar;
using namespace rar::test;
using sampling::GuidanceSchedule;

namespace {

sampling::SamplingOptions greedy(double cfg, double power, const std::string& engine = "plain") {
  sampling::SamplingOptions o;
  o.cfg = cfg, o.cfg_power = power, o.top_k = 1, o.engine = engine;
  return o;
}

// The conditions of a guided batch: the class rows, then as many null-class rows.
torch::Tensor guided_conditions(model::Generator& g, const torch::Tensor& classes) {
  auto cond = g->condition_tokens(classes);
  return torch::cat({cond, torch::full_like(cond, g->cfg.null_class_token())});
}

// Logits of step t of a guided batch on an engine, fed column t-1 of tokens [B,S] in both halves;
// step 0 begins the batch (raster order) and prefills.
torch::Tensor guided_step(sampling::DecodeEngine& e, const torch::Tensor& cond, const torch::Tensor& tokens, int64_t t) {
  if (t == 0) {
    e.begin(cond, tokens.size(0), sampling::scan_order("raster", tokens.size(1)));
    return e.prefill();
  }
  const auto x = tokens.select(1, t - 1);
  return e.step(torch::cat({x, x}), t);
}

// Chi-square statistic of observed counts against expected probabilities (bins with p > 0).
double chi_square(const torch::Tensor& counts, const torch::Tensor& probs) {
  double n = counts.sum().item<double>(), chi = 0;
  for (int64_t i = 0; i < counts.size(0); ++i) {
    double e = n * probs[i].item<double>();
    if (e > 0) chi += std::pow(counts[i].item<double>() - e, 2) / e;
  }
  return chi;
}

bool graph_engine_here() {
  return torch::cuda::is_available() && sampling::parse_engine("auto", torch::kCUDA) == sampling::EngineKind::Graph;
}
model::Generator tiny_rar_on_cuda() {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  g->to(torch::kCUDA);
  return g;
}
// cuBLAS without TF32 for the scope (float32 products exact enough to compare with the reference)
struct Tf32Off {
  bool was = at::globalContext().allowTF32CuBLAS();
  Tf32Off() { at::globalContext().setAllowTF32CuBLAS(false); }
  ~Tf32Off() { at::globalContext().setAllowTF32CuBLAS(was); }
};

model::Generator tiny_generator(int64_t V) {
  model::GeneratorConfig c;
  c.hidden = 32, c.layers = 2, c.heads = 4, c.mlp = 64, c.codebook = V, c.classes = 3, c.seq_len = 4;
  torch::manual_seed(5);
  model::Generator g(c);
  torch::NoGradGuard ng;
  for (auto& p : g->parameters()) p.add_(torch::randn_like(p) * 0.3);  // a peaked, non-trivial model
  g->eval();
  return g;
}

}  // namespace

TEST(Sampler, GreedyTokensEqualReference) {
  auto ref = io::read_npy(shared_ref("ref_greedy.npy"));  // [2,4,256]
  auto classes = io::read_npy(shared_ref("ref_classes.npy"));
  auto g = model::load_generator(shared_ref("tiny_rar.bin"));
  sampling::Sampler guided(g.model, greedy(3.0, 1.0));
  EXPECT_TRUE(guided.sample(classes, 64).equal(ref[0]));
  sampling::Sampler plain(g.model, greedy(0.0, 0.0));
  EXPECT_TRUE(plain.sample(classes, 64).equal(ref[1]));
  // Batch splitting does not change greedy paths.
  EXPECT_TRUE(plain.sample(classes, 3).equal(ref[1]));
}

// The static-shape engine (step index on the device, attention over the whole cache with a mask,
// the null class's adaLN from a table) generates what the plain KV-cache loop generates: the
// reference's greedy paths, and the same sampled tokens for the same seed — across batches that
// reuse its buffers, a batch of another size and every scan order.
TEST(Sampler, StaticEngineGeneratesWhatThePlainLoopDoes) {
  auto ref = io::read_npy(shared_ref("ref_greedy.npy"));  // [2,4,256]
  auto classes = io::read_npy(shared_ref("ref_classes.npy"));
  auto g = model::load_generator(shared_ref("tiny_rar.bin"));
  sampling::Sampler guided(g.model, greedy(3.0, 1.0, "static"));
  EXPECT_EQ(guided.engine(), sampling::EngineKind::Static);
  EXPECT_TRUE(guided.sample(classes, 64).equal(ref[0]));
  sampling::Sampler plain(g.model, greedy(0.0, 0.0, "static"));
  EXPECT_TRUE(plain.sample(classes, 3).equal(ref[1]));  // batches of 3 then 1: buffers rebuilt

  auto tiny = tiny_generator(16);
  for (const auto& order : sampling::order_names()) {
    sampling::SamplingOptions o;
    o.cfg = 2.0, o.top_p = 0.95, o.order = order;
    o.engine = "plain";
    sampling::Sampler a(tiny, o);
    o.engine = "static";
    sampling::Sampler b(tiny, o);
    for (uint64_t seed : {7, 8}) {  // the second batch reuses the static buffers
      auto cls = torch::tensor({0, 1, 2, 0, 1, 2, 0, 1}, torch::kInt64).roll(static_cast<int64_t>(seed));
      EXPECT_TRUE(a.sample_batch(cls, seed).equal(b.sample_batch(cls, seed))) << order << " seed " << seed;
    }
  }
}

TEST(Sampler, EngineNamesAreChecked) {
  auto g = tiny_generator(16);
  sampling::SamplingOptions o;
  o.engine = "turbo";
  EXPECT_RAR_ERROR(sampling::Sampler(g, o), "--engine must be plain, static, graph or auto");
  o.engine = "auto";
  EXPECT_EQ(sampling::Sampler(g, o).engine(), sampling::EngineKind::Plain);  // on the CPU
  o.engine = "graph";
  EXPECT_RAR_ERROR(sampling::Sampler(g, o), "--engine graph needs a CUDA device");
}

// CUDA: the captured step replays what the plain loop computes — greedy paths identical to the
// reference's in float32 (TF32 off), and in bf16 the logits of every step within 3% of the
// plain loop's logit range when both are fed the same tokens.
TEST(SamplerCuda, GraphEngineMatchesThePlainLoop) {
  if (!graph_engine_here()) GTEST_SKIP() << "no CUDA device or no CUDA build";
  auto ref = io::read_npy(shared_ref("ref_greedy.npy"));
  auto classes = io::read_npy(shared_ref("ref_classes.npy"));
  auto g = tiny_rar_on_cuda();
  Tf32Off tf32_off;
  sampling::Sampler guided(g, greedy(3.0, 1.0, "graph"));
  EXPECT_TRUE(guided.sample(classes, 64).equal(ref[0]));
  sampling::Sampler plain(g, greedy(0.0, 0.0, "graph"));
  EXPECT_TRUE(plain.sample(classes, 64).equal(ref[1]));
  EXPECT_TRUE(plain.sample(classes, 64).equal(ref[1]));  // replayed graph, second batch
  // Row counts interleaved on one engine (a service's batches): each count's graph is captured
  // once over the first rows of the shared cache and replays after the others ran — the same
  // sampled tokens as the static step run eagerly (the same kernels) for every batch.
  {
    auto o = greedy(3.0, 1.0, "graph");
    o.top_k = 0, o.top_p = 0.9, o.seed = 11;
    sampling::Sampler graphed(g, o);
    o.engine = "static";
    sampling::Sampler eager(g, o);
    auto many = torch::cat({classes, classes, classes});  // 12 rows
    for (int64_t batch : {4, 3, 12, 2, 4, 3})
      EXPECT_TRUE(graphed.sample(many, batch).equal(eager.sample(many, batch))) << "batch " << batch;
  }

  g->to(torch::kBFloat16);
  const auto cond = guided_conditions(g, classes.to(torch::kCUDA));
  sampling::DecodeEngine eager(g, sampling::EngineKind::Plain), graph(g, sampling::EngineKind::Graph);
  const auto fed_tokens = ref[0].to(torch::kCUDA);
  double worst = 0;
  for (int64_t t = 0; t < g->cfg.seq_len; ++t) {
    auto a = guided_step(eager, cond, fed_tokens, t);
    auto b = guided_step(graph, cond, fed_tokens, t);
    worst = std::max(worst, ((b - a).abs().max() / (a.max() - a.min())).item<double>());
  }
  EXPECT_LT(worst, 3e-2);
}

TEST(Guidance, Schedules) {
  const int64_t S = 256;
  // pow-cosine with p = 0: 0^0 = 1, so the scale is g at every step.
  for (int64_t t : {0, 1, 128, 255}) EXPECT_FLOAT_EQ(sampling::guidance_scale_at(t, S, 4.0, 0.0, GuidanceSchedule::PowCosine), 4.0f);
  // p = 1: rises from 1 at t = 0 through (g+1)/2 at t = S/2.
  EXPECT_FLOAT_EQ(sampling::guidance_scale_at(0, S, 3.0, 1.0, GuidanceSchedule::PowCosine), 1.0f);
  EXPECT_NEAR(sampling::guidance_scale_at(128, S, 3.0, 1.0, GuidanceSchedule::PowCosine), 2.0f, 1e-6);
  EXPECT_NEAR(sampling::guidance_scale_at(64, S, 16.0, 2.75, GuidanceSchedule::PowCosine),
              15.0 * (1 - std::cos(M_PI * std::pow(0.25, 2.75))) / 2 + 1, 1e-4);
  EXPECT_FLOAT_EQ(sampling::guidance_scale_at(64, S, 5.0, 0.0, GuidanceSchedule::Linear), 2.0f);
  EXPECT_FLOAT_EQ(sampling::guidance_scale_at(200, S, 5.0, 9.0, GuidanceSchedule::Constant), 5.0f);
  auto c = torch::tensor({{2.f, 0.f}}), u = torch::tensor({{1.f, 1.f}});
  EXPECT_TRUE(sampling::apply_guidance(c, u, torch::full({1, 1}, 3.f)).equal(torch::tensor({{4.f, -2.f}})));
  EXPECT_RAR_ERROR(sampling::parse_guidance_schedule("cosine"), "expected pow-cosine, linear or constant");
}

TEST(LogitsChain, TemperatureFrequenciesMatchSoftmaxChiSquare) {
  auto logits = torch::tensor({{2.0f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 1.5f, -3.0f}});
  for (double T : {0.5, 1.0, 2.0}) {
    auto probs = (logits[0] / T).softmax(0);
    auto counts = torch::zeros({8}, torch::kFloat64);
    for (uint64_t seed = 0; seed < 20; ++seed) {  // many seeds, 1000 draws each
      auto gen = sampling::make_generator(torch::kCPU, seed);
      auto draws = sampling::draw(sampling::apply_temperature(logits.expand({1000, 8}), T), gen);
      counts += torch::bincount(draws, {}, 8).to(torch::kFloat64);
    }
    // 7 degrees of freedom: P(chi² > 24.32) = 0.001.
    EXPECT_LT(chi_square(counts, probs), 24.32) << "T=" << T << " counts " << counts;
  }
}

TEST(LogitsChain, TopKAndTopPNeverEmitExcludedTokens) {
  torch::manual_seed(3);
  auto logits = torch::randn({64, 50}) * 3;
  auto gen = sampling::make_generator(torch::kCPU, 9);
  auto topk = std::get<1>(logits.topk(5, -1));
  for (int rep = 0; rep < 50; ++rep) {
    auto d = sampling::draw(sampling::apply_top_k(logits, 5), gen);
    EXPECT_TRUE(topk.eq(d.unsqueeze(1)).any(1).all().item<bool>());
  }
  // top-p: the kept set is the smallest prefix (by probability) reaching p.
  auto probs = logits.softmax(-1);
  auto [sorted, idx] = probs.sort(-1, true);
  auto before = sorted.cumsum(-1) - sorted;
  for (double p : {0.1, 0.5, 0.9}) {
    auto allowed = torch::zeros_like(probs, torch::kBool).scatter(-1, idx, before < p);
    for (int rep = 0; rep < 50; ++rep) {
      auto d = sampling::draw(sampling::apply_top_p(logits, p), gen);
      EXPECT_TRUE(allowed.gather(1, d.unsqueeze(1)).all().item<bool>()) << "p=" << p;
    }
  }
  // p = 1 and k = 0 change nothing; k = 1 keeps only the best.
  EXPECT_TRUE(sampling::apply_top_p(logits, 1.0).equal(logits));
  EXPECT_TRUE(sampling::apply_top_k(logits, 0).equal(logits));
  EXPECT_TRUE(sampling::draw(sampling::apply_top_k(logits, 1), gen).equal(logits.argmax(-1)));
  EXPECT_RAR_ERROR(sampling::apply_top_p(logits, 0.0), "top-p must lie in (0, 1]");
  EXPECT_RAR_ERROR(sampling::apply_temperature(logits, 0.0), "temperature must be > 0");
}

namespace {
// An independent temperature -> top-k -> top-p for one row, on the host in double precision with
// sorting by hand: which tokens survive. Top-k keeps every token at or above the k-th largest
// logit (ties kept); top-p keeps a token when the tokens ranked strictly above it hold less than p
// (the smallest set reaching p; the best token always). `margin` says how close a top-p decision
// came to p (a random case too close to call in float32 is not a test of the rule).
std::vector<bool> reference_kept(const std::vector<float>& logits, float temperature, int64_t k, double p,
                                 double* margin = nullptr) {
  const size_t V = logits.size();
  std::vector<float> t(V);
  for (size_t i = 0; i < V; ++i) t[i] = logits[i] / temperature;  // float, as the chain divides
  std::vector<float> sorted(t);
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  const float kth = sorted[std::min<size_t>(static_cast<size_t>(k), V) - 1];
  std::vector<bool> keep(V);
  for (size_t i = 0; i < V; ++i) keep[i] = t[i] >= kth;
  double mx = -1e300, z = 0;
  for (size_t i = 0; i < V; ++i)
    if (keep[i]) mx = std::max(mx, double(t[i]));
  std::vector<std::pair<double, size_t>> probs;
  for (size_t i = 0; i < V; ++i)
    if (keep[i]) z += std::exp(double(t[i]) - mx);
  for (size_t i = 0; i < V; ++i)
    if (keep[i]) probs.emplace_back(std::exp(double(t[i]) - mx) / z, i);
  std::sort(probs.begin(), probs.end(), [](auto& a, auto& b) { return a.first > b.first; });
  double above = 0, closest = 1e300;
  for (auto& [q, i] : probs) {
    if (p < 1) {
      closest = std::min(closest, std::abs(above - p));
      keep[i] = above < p;
    }
    above += q;
  }
  if (margin) *margin = closest;
  return keep;
}
std::vector<bool> finite_mask(const torch::Tensor& row) {
  auto f = row.isfinite().to(torch::kBool).contiguous();
  return std::vector<bool>(f.data_ptr<bool>(), f.data_ptr<bool>() + f.numel());
}
}  // namespace

// The row forms of the chain (one setting per row: a batch of requests runs one chain) against
// the independent reference above: hand-made rows with ties at the k-th logit and top-p
// boundaries on either side of p, then random rows with random settings; the kept logits keep
// their tempered value. The scalar forms are the row forms with every row alike. Then the draw:
// each block of rows with its own generator equals torch.multinomial on those rows.
TEST(LogitsChain, RowFormsKeepWhatAnIndependentChainKeepsAndDrawIsMultinomials) {
  auto chain = [](const torch::Tensor& logits, std::vector<double> temps, std::vector<int64_t> ks,
                  std::vector<double> ps) {
    auto col = [](const auto& v, at::ScalarType dt) {
      return torch::tensor(std::vector<double>(v.begin(), v.end()), torch::kFloat64).to(dt).view({-1, 1});
    };
    auto t = sampling::apply_temperature_rows(logits, col(temps, torch::kFloat32));
    return sampling::apply_top_p_rows(sampling::apply_top_k_rows(t, col(ks, torch::kInt64)), col(ps, torch::kFloat32));
  };
  // hand-made: ties at the k-th value are kept; top-p keeps what lies above p
  {
    auto l = torch::tensor({3.f, 1.f, 3.f, 2.f, 2.f});
    auto rows = l.unsqueeze(0).repeat({3, 1});
    auto out = chain(rows, {1, 1, 1}, {2, 3, 5}, {1, 1, 1});
    EXPECT_EQ(finite_mask(out[0]), (std::vector<bool>{true, false, true, false, false}));  // k-th value 3: both 3s
    EXPECT_EQ(finite_mask(out[1]), (std::vector<bool>{true, false, true, true, true}));    // k-th value 2: both 2s
    EXPECT_EQ(finite_mask(out[2]), (std::vector<bool>(5, true)));
    auto q = torch::tensor({0.5f, 0.3f, 0.15f, 0.05f}).log().unsqueeze(0).repeat({4, 1});
    auto cut = chain(q, {1, 1, 1, 1}, {4, 4, 4, 4}, {0.45, 0.79, 0.81, 0.96});
    EXPECT_EQ(finite_mask(cut[0]), (std::vector<bool>{true, false, false, false}));  // the best alone reaches 0.45
    EXPECT_EQ(finite_mask(cut[1]), (std::vector<bool>{true, true, false, false}));   // 0.8 reaches 0.79
    EXPECT_EQ(finite_mask(cut[2]), (std::vector<bool>{true, true, true, false}));
    EXPECT_EQ(finite_mask(cut[3]), (std::vector<bool>{true, true, true, true}));     // 0.95 < 0.96
    auto best = chain(q.narrow(0, 0, 1), {1}, {4}, {1e-6});
    EXPECT_EQ(finite_mask(best[0]), (std::vector<bool>{true, false, false, false}));  // at least the best one
  }
  // random rows and settings
  torch::manual_seed(4);
  const int64_t B = 64, V = 40;
  auto logits = torch::randn({B, V}) * 2;
  std::vector<double> temps(B), ps(B);
  std::vector<int64_t> ks(B);
  for (int64_t i = 0; i < B; ++i) {
    temps[i] = 0.5 + 1.5 * torch::rand({1}).item<double>();
    ks[i] = 1 + torch::randint(0, V, {1}).item<int64_t>();
    ps[i] = i % 4 == 0 ? 1.0 : 0.05 + 0.95 * torch::rand({1}).item<double>();
  }
  auto out = chain(logits, temps, ks, ps);
  int64_t checked = 0;
  for (int64_t i = 0; i < B; ++i) {
    auto row = logits[i].contiguous();
    std::vector<float> l(row.data_ptr<float>(), row.data_ptr<float>() + V);
    double margin = 0;
    auto keep = reference_kept(l, static_cast<float>(temps[i]), ks[i], ps[i], &margin);
    if (margin < 1e-5) continue;  // too close to p to call in float32
    ++checked;
    EXPECT_EQ(finite_mask(out[i]), keep) << "row " << i << " T " << temps[i] << " k " << ks[i] << " p " << ps[i];
    for (int64_t v = 0; v < V; ++v)
      if (keep[v]) EXPECT_EQ(out[i][v].item<float>(), l[v] / static_cast<float>(temps[i])) << "row " << i;
    // the scalar forms: the same chain with every row alike
    auto scalar = sampling::apply_top_p(sampling::apply_top_k(sampling::apply_temperature(logits.narrow(0, i, 1), temps[i]), ks[i]), ps[i]);
    EXPECT_TRUE(scalar[0].equal(out[i])) << "row " << i;
  }
  EXPECT_GT(checked, B * 9 / 10);
  // Two blocks with their own generators; the rows between them belong to no block.
  std::vector<at::Generator> gens{sampling::make_generator(torch::kCPU, 5), sampling::make_generator(torch::kCPU, 9)};
  auto drawn = sampling::draw_rows(logits.narrow(0, 0, 6), {{0, 2}, {3, 3}}, gens);
  auto g5 = sampling::make_generator(torch::kCPU, 5), g9 = sampling::make_generator(torch::kCPU, 9);
  EXPECT_TRUE(drawn.narrow(0, 0, 2).equal(torch::multinomial(logits.narrow(0, 0, 2).softmax(-1), 1, false, g5).view({-1})));
  EXPECT_TRUE(drawn.narrow(0, 3, 3).equal(torch::multinomial(logits.narrow(0, 3, 3).softmax(-1), 1, false, g9).view({-1})));
  EXPECT_EQ(drawn[2].item<int64_t>(), logits[2].argmax().item<int64_t>());
  // the generators moved on exactly as multinomial's did
  EXPECT_TRUE(torch::rand({3}, gens[1]).equal(torch::rand({3}, g9)));
}

TEST(LogitsChainCuda, DrawIsMultinomialsOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (sampling::parse_engine("auto", torch::kCUDA) != sampling::EngineKind::Graph) GTEST_SKIP() << "no CUDA build";
  torch::manual_seed(4);
  auto logits = (torch::randn({300, 1024}) * 2).to(torch::kCUDA);
  std::vector<at::Generator> gens{sampling::make_generator(torch::kCUDA, 5), sampling::make_generator(torch::kCUDA, 9)};
  auto drawn = sampling::draw_rows(logits, {{0, 100}, {100, 200}}, gens);
  auto g5 = sampling::make_generator(torch::kCUDA, 5), g9 = sampling::make_generator(torch::kCUDA, 9);
  auto m5 = torch::multinomial(logits.narrow(0, 0, 100).softmax(-1), 1, false, g5).view({-1});
  auto m9 = torch::multinomial(logits.narrow(0, 100, 200).softmax(-1), 1, false, g9).view({-1});
  EXPECT_TRUE(drawn.narrow(0, 0, 100).equal(m5));
  EXPECT_TRUE(drawn.narrow(0, 100, 200).equal(m9));
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  EXPECT_TRUE(torch::rand({3}, gens[1], cuda).equal(torch::rand({3}, g9, cuda)));
}

TEST(Sampler, FirstTokenFrequenciesMatchTheModelChiSquare) {
  const int64_t V = 6;
  auto g = tiny_generator(V);
  const double T = 1.5;
  torch::Tensor probs;
  {
    torch::NoGradGuard ng;
    auto cache = g->make_cache(1, 5);
    auto cond = g->condition_tokens(torch::tensor({1}, torch::kInt64));
    probs = (g->decode_prefill(cond, 0, cache)[0] / T).softmax(0);
  }
  sampling::SamplingOptions o;
  o.temperature = T;
  sampling::Sampler sampler(g, o);
  auto counts = torch::zeros({V}, torch::kFloat64);
  for (uint64_t seed = 0; seed < 10; ++seed) {
    auto tokens = sampler.sample_batch(torch::ones({400}, torch::kInt64), seed);
    counts += torch::bincount(tokens.select(1, 0), {}, V).to(torch::kFloat64);
  }
  EXPECT_LT(chi_square(counts, probs), 20.52) << counts << probs;  // 5 dof, p = 0.001
}

// The exact probability of each of the V^S sequences of tiny_generator under guidance scale
// `cfg` (pow-cosine power 1), temperature T, top-k and top-p for class 1: the product of each
// step's chain distribution, from full forwards of every sequence (raster order).
torch::Tensor joint_distribution(model::Generator& g, double cfg, double T, int64_t top_k = 0, double top_p = 1.0) {
  torch::NoGradGuard ng;
  const int64_t V = g->cfg.codebook, S = g->cfg.seq_len, N = static_cast<int64_t>(std::pow(V, S));
  auto seq = torch::zeros({N, S}, torch::kInt64);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0, r = i; j < S; ++j, r /= V) seq[i][S - 1 - j] = r % V;  // row i = i in base V
  auto c = g->forward(seq, g->condition_tokens(torch::ones({N}, torch::kInt64))).narrow(1, 0, S);
  auto u = g->forward(seq, torch::full({N}, g->cfg.null_class_token(), torch::kInt64)).narrow(1, 0, S);
  auto logp = torch::zeros({N}, torch::kFloat64);
  for (int64_t t = 0; t < S; ++t) {
    const float scale = sampling::guidance_scale_at(t, S, cfg, 1.0, GuidanceSchedule::PowCosine);
    auto l = cfg != 0 ? u.select(1, t) + (c.select(1, t) - u.select(1, t)) * scale : c.select(1, t);
    auto chain = sampling::apply_top_p(sampling::apply_top_k(l / T, top_k), top_p);
    logp += chain.log_softmax(-1).gather(1, seq.select(1, t).unsqueeze(1)).squeeze(1).to(torch::kFloat64);
  }
  return logp.exp();
}

// Index of each sampled sequence [B,S] in joint_distribution's enumeration, counted.
torch::Tensor sequence_counts(const torch::Tensor& tokens, int64_t V) {
  auto idx = torch::zeros({tokens.size(0)}, torch::kInt64);
  for (int64_t j = 0; j < tokens.size(1); ++j) idx = idx * V + tokens.select(1, j).cpu();
  return torch::bincount(idx, {}, static_cast<int64_t>(std::pow(V, tokens.size(1)))).to(torch::kFloat64);
}

// Speculative Jacobi decoding keeps the token distribution: the frequencies of whole sequences
// (all 4^4 of a peaked tiny model, guided, temperature 1.5) drawn with windows of 2, 3 and 4
// positions match the exact joint distribution as well as sequential sampling's do, and are far
// from the distribution without guidance (the test tells distributions apart).
TEST(Sampler, SpeculativeDecodingKeepsTheJointDistributionChiSquare) {
  const int64_t V = 4, N = 20000;
  auto g = tiny_generator(V);
  const auto exact = joint_distribution(g, 2.0, 1.5), unguided = joint_distribution(g, 0.0, 1.5);
  ASSERT_NEAR(exact.sum().item<double>(), 1.0, 1e-6);
  sampling::SamplingOptions o;
  o.cfg = 2.0, o.cfg_power = 1.0, o.temperature = 1.5, o.engine = "plain";
  const auto classes = torch::ones({N}, torch::kInt64);
  const double limit = 330.5;  // chi-square, 255 dof, p = 0.001
  sampling::Sampler sequential(g, o);
  auto seq_counts = sequence_counts(sequential.sample_batch(classes, 11), V);
  EXPECT_LT(chi_square(seq_counts, exact), limit) << "sequential sampling";
  for (auto [W, engine] : std::vector<std::pair<int64_t, std::string>>{{2, "plain"}, {3, "plain"}, {4, "plain"}, {3, "static"}}) {
    o.speculative = W, o.engine = engine;
    sampling::Sampler spec(g, o);
    auto tokens = spec.sample_batch(classes, 12 + W);
    auto counts = sequence_counts(tokens, V);
    EXPECT_LT(chi_square(counts, exact), limit) << "window " << W << ", " << engine;
    EXPECT_GT(chi_square(counts, unguided), 10 * limit) << "window " << W << ", " << engine;
    const auto& st = spec.speculative_stats();
    EXPECT_EQ(st.tokens, 4);
    EXPECT_GE(st.calls, 2);  // the prefill and at least one window
    EXPECT_LE(st.calls, 4);  // never more than one call per token
  }
  // top-k 3 and top-p 0.9 (tokens outside them never drawn: zero-probability sequences stay empty)
  o.top_k = 3, o.top_p = 0.9, o.speculative = 3, o.engine = "static";
  const auto filtered = joint_distribution(g, 2.0, 1.5, 3, 0.9);
  auto counts = sequence_counts(sampling::Sampler(g, o).sample_batch(classes, 31), V);
  EXPECT_EQ(counts.masked_select(filtered.eq(0)).sum().item<double>(), 0.0);
  EXPECT_LT(chi_square(counts, filtered), limit) << "top-k 3, top-p 0.9";
  EXPECT_GT(chi_square(counts, exact), 10 * limit) << "top-k 3, top-p 0.9 vs unfiltered";
}

// Greedy speculative decoding is Jacobi decoding: the sequential greedy tokens (the reference
// code's), in fewer calls when drafts match, on the plain and the static window; drawn tokens are
// the same on both windows for a seed, with the exact and the fp8 cache.
TEST(Sampler, SpeculativeGreedyEqualsSequentialGreedy) {
  auto ref = io::read_npy(shared_ref("ref_greedy.npy"));  // [2,4,256]
  auto classes = io::read_npy(shared_ref("ref_classes.npy"));
  auto g = model::load_generator(shared_ref("tiny_rar.bin"));
  for (auto [W, engine] : std::vector<std::pair<int64_t, std::string>>{{1, "plain"}, {8, "plain"}, {32, "plain"}, {8, "static"}}) {
    auto o = greedy(3.0, 1.0, engine);
    o.speculative = W;
    sampling::Sampler s(g.model, o);
    EXPECT_TRUE(s.sample(classes, 64).equal(ref[0])) << "window " << W << ", " << engine;
    EXPECT_EQ(s.speculative_stats().tokens, 256);
    if (W == 1) EXPECT_EQ(s.speculative_stats().calls, 256);
    else EXPECT_LT(s.speculative_stats().calls, 256) << "window " << W;
  }
  // one image drawn (not greedy) with the static window, the exact or the fp8 cache: the plain
  // window's tokens for the seed (the same random numbers; logits equal up to float rounding; in a
  // batch the plain kind advances by the slowest image, the static kind each image on its own)
  for (std::string kv : {"model", "fp8"})
    for (int64_t i = 0; i < classes.size(0); ++i) {
      sampling::SamplingOptions d;
      d.cfg = 3.0, d.cfg_power = 1.0, d.speculative = 8, d.kv_cache = kv, d.engine = "plain";
      auto one = classes.narrow(0, i, 1);
      auto plain = sampling::Sampler(g.model, d).sample_batch(one, 3 + i);
      d.engine = "static";
      EXPECT_TRUE(sampling::Sampler(g.model, d).sample_batch(one, 3 + i).equal(plain)) << kv << ", image " << i;
    }
  auto o = greedy(3.0, 1.0);
  o.speculative = -1;
  EXPECT_RAR_ERROR(o.validate(), "--speculative must be >= 0");
}

// Row groups with settings of their own (a service's batch) under speculative decoding: on the
// static window every image advances on its own and each group draws from its own generator, so
// a group's tokens are the ones it gets alone (CPU, float32); each group's first-token frequencies
// follow its own settings.
TEST(Sampler, SpeculativeRowGroupsSampleAsIfAlone) {
  auto g = tiny_generator(16);
  sampling::SamplingOptions batch;
  batch.engine = "static", batch.speculative = 3;
  auto a = batch, b = batch, c = batch;
  a.cfg = 2.0, a.cfg_power = 1.0;
  b.temperature = 0.6, b.top_k = 5;
  c.top_k = 1;  // greedy
  const std::vector<sampling::RowGroup> groups{{0, 3, a, 21}, {3, 2, b, 22}, {5, 4, c, 23}};
  auto classes = torch::tensor({0, 1, 2, 2, 1, 0, 0, 1, 2}, torch::kInt64);
  sampling::Sampler s(g, batch);
  auto together = s.sample_groups(classes, groups);
  for (const auto& grp : groups) {
    sampling::Sampler alone(g, batch);
    auto own = alone.sample_groups(classes.narrow(0, grp.first, grp.n), {sampling::RowGroup{0, grp.n, grp.opts, grp.seed}});
    EXPECT_TRUE(own.equal(together.narrow(0, grp.first, grp.n))) << "group at row " << grp.first;
  }
  // greedy rows: the sequential greedy tokens
  auto greedy_seq = sampling::Sampler(g, greedy(0.0, 0.0)).sample_batch(classes.narrow(0, 5, 4), 0);
  EXPECT_TRUE(greedy_seq.equal(together.narrow(0, 5, 4)));
}

// The static and graph kinds keep a row count's buffers (the loop's state and the batch's
// settings) from batch to batch, copying a batch's settings in when they have the same layout:
// every batch gives what a fresh sampler gives for it, whether its settings' values changed, their
// layout changed, or it returns to the first.
TEST(Sampler, SpeculativeKeptBuffersGiveWhatAFreshSamplerGives) {
  auto g = tiny_generator(16);
  sampling::SamplingOptions batch;
  batch.engine = "static", batch.speculative = 3;
  auto cool = batch, warm = batch, filtered = batch;
  cool.cfg = 2.0, cool.cfg_power = 1.0, cool.temperature = 0.7;
  warm.cfg = 4.0, warm.cfg_power = 0.5, warm.temperature = 1.6;  // same layout, other values
  filtered.cfg = 3.0, filtered.top_k = 4, filtered.top_p = 0.8;  // another layout
  auto classes = torch::tensor({0, 1, 2, 2, 1, 0}, torch::kInt64);
  auto two = [&](const sampling::SamplingOptions& a, const sampling::SamplingOptions& b) {
    return std::vector<sampling::RowGroup>{{0, 4, a, 5}, {4, 2, b, 6}};
  };
  sampling::Sampler kept(g, batch);
  std::vector<torch::Tensor> got;
  for (const auto& groups : {two(cool, cool), two(warm, warm), two(filtered, cool), two(cool, cool)}) {
    got.push_back(kept.sample_groups(classes, groups));
    EXPECT_TRUE(got.back().equal(sampling::Sampler(g, batch).sample_groups(classes, groups))) << "batch " << got.size();
  }
  EXPECT_FALSE(got[0].equal(got[1]));  // the settings' values reached the kept buffers
  EXPECT_TRUE(got[0].equal(got[3]));
}

// One Sampler, both strategies on the same static buffers (one KV cache, one set of tables per row
// count): batches taken in turn sequentially and speculatively — of one row count, then another,
// then the first again with other classes — each give what a fresh sampler gives for that batch
// alone, so neither strategy leaves anything behind that changes the other's.
TEST(Sampler, BothStrategiesShareTheirBuffersWithoutDisturbingEachOther) {
  auto g = tiny_generator(16);
  sampling::SamplingOptions o;
  o.engine = "static", o.speculative = 3, o.cfg = 2.0, o.cfg_power = 1.0, o.temperature = 0.8;
  sampling::Sampler shared(g, o);
  const auto four = torch::tensor({0, 1, 2, 2}, torch::kInt64), two = torch::tensor({1, 0}, torch::kInt64),
             other = torch::tensor({2, 2, 2, 0}, torch::kInt64);
  using sampling::Strategy;
  int n = 0;
  for (auto [classes, strategy, seed] : {std::tuple{four, Strategy::sequential, 1}, std::tuple{four, Strategy::speculative, 2},
                                         std::tuple{two, Strategy::speculative, 3}, std::tuple{two, Strategy::sequential, 4},
                                         std::tuple{other, Strategy::sequential, 5}, std::tuple{four, Strategy::speculative, 6}}) {
    const std::vector<sampling::RowGroup> groups{{0, classes.size(0), o, static_cast<uint64_t>(seed)}};
    auto got = shared.sample_groups(classes, groups, strategy);
    auto fresh = sampling::Sampler(g, o).sample_groups(classes, groups, strategy);
    EXPECT_TRUE(got.equal(fresh)) << "batch " << n++;
  }
  EXPECT_EQ(shared.speculative_stats().tokens, 3 * g->cfg.seq_len);  // the three speculative batches
}

// A step that cannot be captured (here: a host sync inside the capture) fails with an error, and
// the stream is usable afterwards (the capture was ended before the error left); a capturable
// step then captures and replays.
TEST(SamplerCuda, FailedCaptureLeavesTheStreamUsable) {
  if (!graph_engine_here()) GTEST_SKIP() << "no CUDA device or no CUDA build";
  auto x = torch::ones({8}, torch::kCUDA);
  EXPECT_ANY_THROW(gpu::StepGraph([&] {
    auto y = x * 2;
    (void)y.sum().item<float>();  // a sync: not allowed while capturing
    return y;
  }));
  EXPECT_EQ((x * 3).sum().item<float>(), 24.0f);
  gpu::StepGraph ok([&] { return x * 4; });
  x.fill_(2);
  EXPECT_EQ(ok.replay().sum().item<float>(), 64.0f);
}

// On the GPU the graph kind replays the static window: greedy gives the reference's tokens, and a
// drawn batch (guided, fp32 and bf16, exact and fp8 cache) the static kind's tokens for the seed.
TEST(SamplerCuda, SpeculativeGraphWindowMatchesTheStaticOne) {
  if (!graph_engine_here()) GTEST_SKIP() << "no CUDA device or no CUDA build";
  auto ref = io::read_npy(shared_ref("ref_greedy.npy"));
  auto classes = io::read_npy(shared_ref("ref_classes.npy"));
  auto g = tiny_rar_on_cuda();
  Tf32Off tf32_off;
  auto o = greedy(3.0, 1.0, "graph");
  o.speculative = 8;
  EXPECT_TRUE(sampling::Sampler(g, o).sample(classes, 64).equal(ref[0]));
  for (auto dt : {torch::kFloat32, torch::kBFloat16})
    for (std::string kv : {"model", "fp8"}) {
      g->to(dt);
      sampling::SamplingOptions d;
      d.cfg = 3.0, d.cfg_power = 1.0, d.speculative = 8, d.kv_cache = kv;
      d.engine = "static";
      auto a = sampling::Sampler(g, d).sample_batch(classes, 5);
      d.engine = "graph";
      sampling::Sampler graph(g, d);
      EXPECT_TRUE(graph.sample_batch(classes, 5).equal(a)) << dt << " " << kv;
      EXPECT_TRUE(graph.sample_batch(classes, 5).equal(a)) << dt << " " << kv << ", replayed";
      EXPECT_LT(graph.speculative_stats().calls, 2 * 256);
      // the kept graph on other classes and settings of the same layout, then on another layout
      // (captured again): the static kind's tokens
      sampling::SamplingOptions e = d, f = d;
      e.cfg = 2.0, f.top_k = 20, f.top_p = 0.9;
      const std::vector<sampling::RowGroup> same_layout{{0, 2, e, 8}, {2, classes.size(0) - 2, d, 9}},
          other_layout{{0, 2, f, 8}, {2, classes.size(0) - 2, d, 9}};
      auto flipped = classes.flip(0);
      for (const auto& groups : {same_layout, other_layout}) {
        d.engine = "static";
        auto want = sampling::Sampler(g, d).sample_groups(flipped, groups);
        EXPECT_TRUE(graph.sample_groups(flipped, groups).equal(want)) << dt << " " << kv << ", groups";
      }
    }
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferent) {
  auto g = tiny_generator(16);
  sampling::SamplingOptions o;
  o.cfg = 2.0;
  o.top_p = 0.95;
  sampling::Sampler s(g, o);
  auto classes = torch::tensor({0, 1, 2, 0, 1, 2, 0, 1}, torch::kInt64);
  auto a = s.sample_batch(classes, 7), b = s.sample_batch(classes, 7), c = s.sample_batch(classes, 8);
  EXPECT_TRUE(a.equal(b));
  EXPECT_FALSE(a.equal(c));
  EXPECT_GE(a.min().item<int64_t>(), 0);
  EXPECT_LT(a.max().item<int64_t>(), 16);
}

TEST(Sampler, EveryScanOrderGeneratesFullGrids) {
  auto g = tiny_generator(16);
  for (const auto& order : sampling::order_names()) {
    sampling::SamplingOptions o;
    o.order = order;
    o.top_k = 1;
    sampling::Sampler s(g, o);
    auto tokens = s.sample_batch(torch::tensor({0, 2}, torch::kInt64), 0);
    EXPECT_EQ(tokens.sizes(), (std::vector<int64_t>{2, 4})) << order;
    // Greedy in order τ = the argmax of the full forward with τ, position by position.
    torch::NoGradGuard ng;
    auto tau = sampling::order_tensor(sampling::scan_order(order, 4)).unsqueeze(0).expand({2, 4}).contiguous();
    auto logits = g->forward(tokens, g->condition_tokens(torch::tensor({0, 2}, torch::kInt64)), tau);
    auto pred = logits.narrow(1, 0, 4).argmax(-1);  // position j predicts tokens[τ_{j+1}]
    EXPECT_TRUE(pred.equal(tokens.gather(1, tau))) << order;
  }
}

TEST(Orders, AreThePaperAblationOrders) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(sampling::scan_order("raster", 3, 3), (V{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(sampling::scan_order("spiral-in", 3, 3), (V{0, 1, 2, 5, 8, 7, 6, 3, 4}));
  EXPECT_EQ(sampling::scan_order("spiral-out", 3, 3), (V{4, 3, 6, 7, 8, 5, 2, 1, 0}));
  EXPECT_EQ(sampling::scan_order("alternate", 3, 3), (V{0, 1, 2, 5, 4, 3, 6, 7, 8}));
  EXPECT_EQ(sampling::scan_order("z-curve", 4, 4), (V{0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15}));
  EXPECT_EQ(sampling::scan_order("subsample", 4, 4), (V{0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15}));
  for (const auto& name : sampling::order_names()) {
    auto tau = sampling::scan_order(name, 256);
    std::set<int64_t> seen(tau.begin(), tau.end());
    EXPECT_EQ(seen.size(), 256u) << name;
    EXPECT_EQ(*seen.rbegin(), 255) << name;
  }
  EXPECT_RAR_ERROR(sampling::scan_order("hilbert", 16), "unknown scan order 'hilbert'");
  EXPECT_RAR_ERROR(sampling::scan_order("raster", 250), "do not form a square grid");
}

TEST(Sampler, BadOptionsAndClassesAreRejected) {
  auto g = tiny_generator(16);
  auto bad = [&](auto edit, const char* needle) {
    sampling::SamplingOptions o;
    edit(o);
    EXPECT_RAR_ERROR(sampling::Sampler(g, o), needle);
  };
  bad([](auto& o) { o.cfg_power = -1; }, "--cfg-power must lie in [0, 1000]");
  bad([](auto& o) { o.temperature = 0; }, "--temperature must lie in [0.0001, 10000]");
  bad([](auto& o) { o.cfg = NAN; }, "--cfg must lie in [0, 10000], got nan");
  bad([](auto& o) { o.temperature = INFINITY; }, "--temperature must lie in");
  bad([](auto& o) { o.top_p = 1.5; }, "--top-p must lie in [1e-06, 1]");
  bad([](auto& o) { o.top_p = 0; }, "--top-p must lie in [1e-06, 1]");
  // values that would overflow or vanish in float32 (every token 0 before these checks)
  bad([](auto& o) { o.cfg = 1e39; }, "--cfg must lie in [0, 10000], got 1e+39");
  bad([](auto& o) { o.temperature = 1e-46; }, "--temperature must lie in [0.0001, 10000], got 1e-46");
  bad([](auto& o) { o.top_p = 1e-300; }, "--top-p must lie in [1e-06, 1], got 1e-300");
  bad([](auto& o) { o.order = "diagonal"; }, "unknown scan order");
  bad([](auto& o) { o.attention_kernel = "tiles"; }, "expected block, warp, split or auto, got 'tiles'");
  sampling::Sampler s(g, {});
  EXPECT_RAR_ERROR(s.sample_batch(torch::tensor({3}, torch::kInt64), 0), "class ids must lie in [0, 3)");
  EXPECT_RAR_ERROR(sampling::class_list({0, 5}, false, 1, 3), "class id 5 out of range [0, 3)");
  EXPECT_EQ(sampling::class_list({}, true, 2, 3).equal(torch::tensor({0, 0, 1, 1, 2, 2}, torch::kInt64)), true);
  EXPECT_EQ(sampling::class_list({2, 0}, false, 2, 3).equal(torch::tensor({2, 2, 0, 0}, torch::kInt64)), true);
}

// The sampling job behind `rar sample`: batches in order, batch b drawn with seed + b (so a rank's
// share and a resumed run give the same tokens), images decoded for each, shards written as they
// finish and read back instead of regenerated, max_batches stopping early.
TEST(SampleJob, BatchesInOrderSeededByIndexShardedAndResumable) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  auto vq = model::load_vq(shared_ref("tiny_vq.bin")).model;
  sampling::SamplingOptions o;
  o.cfg = 2.0;
  o.seed = 11;
  const int64_t N = 7, batch = 3;  // batches of 3, 3, 1
  auto classes = torch::arange(N, torch::kInt64).remainder(g->cfg.classes);
  sampling::SampleRun run{classes, batch, 2, 0, o};

  std::vector<sampling::SampledBatch> got;
  auto all = sampling::run_sampling(g, vq, run, [&](const sampling::SampledBatch& b) { got.push_back(b); });
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(all.images, N);
  EXPECT_EQ(all.generated, 3);
  sampling::Sampler direct(g, o);
  for (int64_t b = 0; b < 3; ++b) {
    const auto& x = got[b];
    EXPECT_EQ(x.index, b);
    EXPECT_EQ(x.first, b * batch);
    EXPECT_EQ(x.n, std::min(batch, N - b * batch));
    EXPECT_TRUE(x.classes.equal(classes.narrow(0, x.first, x.n)));
    EXPECT_TRUE(x.tokens.equal(direct.sample_batch(x.classes, sampling::Sampler::batch_seed(o.seed, b)))) << b;
    ASSERT_TRUE(x.images.defined());
    EXPECT_EQ(x.images.size(0), x.n);
    EXPECT_EQ(x.images.scalar_type(), torch::kUInt8);
  }
  // rank 1 of 2 takes batch 1 only, with the same tokens
  sampling::SampleRun odd = run;
  odd.rank = 1, odd.world = 2;
  EXPECT_EQ(sampling::images_of_rank(N, batch, 1, 2), 3);
  std::vector<sampling::SampledBatch> mine;
  sampling::run_sampling(g, vq, odd, [&](const sampling::SampledBatch& b) { mine.push_back(b); });
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].index, 1);
  EXPECT_TRUE(mine[0].tokens.equal(got[1].tokens));

  // shards: stop after one batch, then resume: the first batch is read back, not regenerated
  TempDir dir;
  const nlohmann::json settings = {{"test", 1}};
  io::SampleShards shards(dir / "s.npz", N, batch, settings);
  sampling::SampleRun part = run;
  part.shards = &shards;
  part.max_batches = 1;
  auto first = sampling::run_sampling(g, vq, part, [](const sampling::SampledBatch&) {});
  EXPECT_TRUE(first.stopped);
  EXPECT_EQ(first.generated, 1);
  EXPECT_TRUE(shards.done(0));
  EXPECT_FALSE(shards.done(1));
  part.max_batches = 0;
  std::vector<sampling::SampledBatch> rest;
  auto second = sampling::run_sampling(g, vq, part, [&](const sampling::SampledBatch& b) { rest.push_back(b); });
  EXPECT_FALSE(second.stopped);
  EXPECT_EQ(second.generated, 2);
  ASSERT_EQ(rest.size(), 3u);
  EXPECT_FALSE(rest[0].generated);
  EXPECT_FALSE(rest[0].images.defined());
  for (int64_t b = 0; b < 3; ++b) EXPECT_TRUE(rest[b].tokens.equal(got[b].tokens)) << b;
}

// A batch of row groups with settings of their own (what the service coalesces): each group's
// tokens equal those of sampling its rows alone with its settings and seed (CPU, float32).
TEST(Sampler, RowGroupsSampleAsIfAlone) {
  auto g = model::load_generator(shared_ref("tiny_rar.bin")).model;
  sampling::SamplingOptions a, b, c;
  a.cfg = 3.0, a.cfg_power = 1.0, a.temperature = 1.1;               // guided
  b.temperature = 0.8, b.top_k = 5;                                  // unguided, top-k
  c.cfg = 2.0, c.schedule = sampling::GuidanceSchedule::Linear, c.top_p = 0.7;
  auto classes = torch::tensor({1, 2, 3, 0, 0, 4}, torch::kInt64);
  std::vector<sampling::RowGroup> groups = {{0, 2, a, 7}, {2, 1, b, 8}, {3, 3, c, 9}};
  sampling::Sampler batch(g, sampling::SamplingOptions{});
  auto together = batch.sample_groups(classes, groups);
  for (const auto& grp : groups) {
    sampling::Sampler alone(g, grp.opts);
    auto want = alone.sample_batch(classes.narrow(0, grp.first, grp.n), grp.seed);
    EXPECT_TRUE(together.narrow(0, grp.first, grp.n).equal(want)) << "group at row " << grp.first;
  }
  EXPECT_RAR_ERROR(batch.sample_groups(classes, {{0, 2, a, 1}, {3, 3, c, 2}}), "row groups");
}
