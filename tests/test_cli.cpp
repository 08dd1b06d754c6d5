// The `rar` command line: info, convert and score end to end, and one-line errors.
#include <torch/torch.h>

#include "data/token_file.h"
#include "bench/fixtures.h"
#include "helpers.h"
#include "io/npy.h"

using namespace rar;
using namespace rar::test;

namespace {
std::string ref_args() {
  return "--generator " + shared_ref("tiny_rar.bin") + " --tokens " + shared_ref("ref_tokens.npy") + " --classes " +
         shared_ref("ref_classes.npy");
}
void expect_matches_row(const std::string& out_npy, int row) {
  auto got = io::read_npy(out_npy), want = io::read_npy(shared_ref("ref_nll.npy"))[row];
  ASSERT_EQ(got.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 0)) << got << want;
}
}  // namespace

// What the command alone proves: `rar score`'s flags (--orders, --null-class, --batch) reach the
// scorer, and its --out rows are the reference NLL rows (the model's exactness: Generator.* tests).
TEST(Cli, ScoreReproducesReferenceRows) {
  TempDir dir;
  auto r = run_rar("score " + ref_args() + " --out " + (dir / "nll0.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("0\t7.02378"), std::string::npos) << r.output;
  expect_matches_row(dir / "nll0.npy", 0);
  ASSERT_EQ(run_rar("score " + ref_args() + " --orders " + shared_ref("ref_orders.npy") + " --out " +
                    (dir / "nll1.npy")).status, 0);
  expect_matches_row(dir / "nll1.npy", 1);
  ASSERT_EQ(run_rar("score " + ref_args() + " --null-class --batch 1 --out " + (dir / "nll2.npy")).status, 0);
  expect_matches_row(dir / "nll2.npy", 2);
}

// What the command alone proves: `rar info` names a published-format checkpoint's config,
// parameter count and tensors, and a preset's shape.
TEST(Cli, InfoShowsConfigAndTensors) {
  auto r = run_rar("info " + shared_ref("tiny_rar.bin"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("generator: H=64 L=2 heads=4 (head dim 16) I=256 V=1024 C=10 S=256"), std::string::npos);
  EXPECT_NE(r.output.find("parameters: 477888"), std::string::npos);
  EXPECT_NE(r.output.find("blocks.1.adaLN_modulation.1.weight"), std::string::npos);
  auto p = run_rar("info --preset rar_xl");
  ASSERT_EQ(p.status, 0);
  EXPECT_NE(p.output.find("H=1280 L=32 heads=16"), std::string::npos) << p.output;
}

// `rar info` on a pretokenized dataset: sizes, codes used, samples per class with the names file;
// a damaged one is refused by the reader's checksum.
TEST(Cli, InfoDescribesATokenFile) {
  TempDir dir;
  const std::string path = dir / "d.rartok";
  auto tokens = torch::tensor({0, 1, 2, 3, 0, 0, 1, 1, 4, 4, 4, 4}, torch::kInt64).view({3, 4});
  data::write_token_file(path, tokens, torch::tensor({1, 0, 1}, torch::kInt64), 16, 3);
  { std::ofstream(path + ".classes.txt") << "cat\ndog\nbird\n"; }
  auto r = run_rar("info " + path);
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* line : {"samples: 3", "tokens per sample: 4 (2x2 grid)", "codebook: 16 codes", "classes: 3",
                           "codes used: 5 of 16 (the most frequent: 33.3% of all tokens)"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
  EXPECT_NE(r.output.find("0 cat                      1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 dog                      2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2 bird                     0"), std::string::npos) << r.output;
  {  // one token byte changed
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put(3);
  }
  auto bad = run_rar("info " + path);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("checksum mismatch"), std::string::npos) << bad.output;
}

// What the command alone proves: a converted checkpoint (fp32 and bf16) carries its config in the
// safetensors metadata and scores as the original does.
TEST(Cli, ConvertToSafetensorsKeepsScores) {
  TempDir dir;
  auto c = run_rar("convert " + shared_ref("tiny_rar.bin") + " " + (dir / "g.safetensors"));
  ASSERT_EQ(c.status, 0) << c.output;
  auto info = run_rar("info --no-tensors " + (dir / "g.safetensors"));
  EXPECT_NE(info.output.find("format: safetensors"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("metadata rar.generator_config"), std::string::npos) << info.output;
  auto r = run_rar("score --generator " + (dir / "g.safetensors") + " --tokens " + shared_ref("ref_tokens.npy") +
                   " --classes " + shared_ref("ref_classes.npy") + " --out " + (dir / "nll.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  expect_matches_row(dir / "nll.npy", 0);
  // bf16 conversion halves the file and still loads.
  ASSERT_EQ(run_rar("convert --dtype bf16 " + shared_ref("tiny_rar.bin") + " " + (dir / "h.safetensors")).status, 0);
  EXPECT_LT(file_size(dir / "h.safetensors"), file_size(dir / "g.safetensors") * 0.6);
  EXPECT_EQ(run_rar("score --generator " + (dir / "h.safetensors") + " --tokens " + shared_ref("ref_tokens.npy") +
                    " --classes " + shared_ref("ref_classes.npy")).status, 0);
  // info --compare: the float32 conversion is exact; the bf16 one within bf16 rounding; another
  // model's names differ.
  auto same = run_rar("info " + shared_ref("tiny_rar.bin") + " --compare " + (dir / "g.safetensors") + " --tol 0");
  EXPECT_EQ(same.status, 0) << same.output;
  EXPECT_NE(same.output.find("worst: 0.000e+00 over 45 tensors"), std::string::npos) << same.output;
  auto half = run_rar("info " + shared_ref("tiny_rar.bin") + " --compare " + (dir / "h.safetensors") + " --tol 1e-6");
  EXPECT_EQ(half.status, 1) << half.output;
  EXPECT_NE(same.output.find("whole model: ||a-b|| / ||b|| = 0.000e+00"), std::string::npos) << same.output;
  const auto wm = half.output.find("whole model: ||a-b|| / ||b|| = ");
  ASSERT_NE(wm, std::string::npos) << half.output;
  const double rel = std::stod(half.output.substr(wm + 31));
  EXPECT_GT(rel, 1e-4);  // bf16 keeps 8 bits: relative rounding error up to 2^-9, about 1e-3 on average
  EXPECT_LT(rel, 4e-3);
  EXPECT_EQ(run_rar("info " + shared_ref("tiny_rar.bin") + " --compare " + (dir / "h.safetensors") + " --tol 1e-2").status, 0);
  auto other = run_rar("info " + shared_ref("tiny_rar.bin") + " --compare " + shared_ref("tiny_vq.bin"));
  EXPECT_EQ(other.status, 1);
  EXPECT_NE(other.output.find("(only in the first)"), std::string::npos) << other.output;
}

// `rar bench tokens`: a valid .rartok of random sequences shaped like the preset's data.
TEST(Cli, BenchTokensWritesARandomTokenFile) {
  TempDir dir;
  auto r = run_rar("bench tokens --model rar_xl --count 8 --seed 3 --out " + (dir / "r.rartok"));
  ASSERT_EQ(r.status, 0) << r.output;
  data::TokenFile f(dir / "r.rartok");
  EXPECT_EQ(f.info().codebook, 1024);
  EXPECT_EQ(f.info().seq_len, 256);
  EXPECT_EQ(f.info().classes, 1000);
  EXPECT_EQ(f.info().count, 8);
  EXPECT_GT(std::get<0>(at::_unique(f.tokens().to(torch::kInt64))).numel(), 500);  // spread over the vocabulary
}

// The structured token fixture (bench/fixtures.h): sequences of one class share ~3/4 of their
// positions (both kept: 9/16 at least), sequences of different classes almost none — so a model
// can learn it. Every same-class pair of 600 sequences against as many different-class pairs.
TEST(Fixtures, StructuredTokensShareTheirClassTemplate) {
  TempDir dir;
  bench::write_token_fixture(dir / "s.rartok", "rar_b", 600, /*structured=*/true, 0);
  data::TokenFile f(dir / "s.rartok");
  auto t = f.tokens().to(torch::kInt64), y = f.labels().to(torch::kInt64);
  auto [sorted, order] = y.sort();
  t = t.index_select(0, order);
  auto same = sorted.narrow(0, 1, 599).eq(sorted.narrow(0, 0, 599));  // neighbours after sorting by class
  auto agree = t.narrow(0, 1, 599).eq(t.narrow(0, 0, 599)).to(torch::kFloat64).mean(1);
  ASSERT_GT(same.sum().item<int64_t>(), 50);
  EXPECT_GT(agree.masked_select(same).mean().item<double>(), 0.5);
  EXPECT_LT(agree.masked_select(same.logical_not()).mean().item<double>(), 0.05);
}

// `bench attention`: one row per run naming what ran; bad options are one-line errors.
TEST(Cli, BenchAttentionPrintsARowAndChecksItsOptions) {
  auto r = run_rar("bench attention --model rar_b --batch 2 --device cpu --precision fp32 --repeats 1 --fill 40");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("| rar_b | 4 | 16 x 48 | 40 of 257 | fp32 | plain (masked SDPA) |"), std::string::npos)
      << r.output;
  auto f = run_rar("bench attention --model rar_b --batch 1 --cfg 0 --device cpu --kv-cache fp8 --precision bf16 "
                   "--repeats 1 --no-header");
  ASSERT_EQ(f.status, 0) << f.output;
  EXPECT_NE(f.output.find("| rar_b | 1 | 16 x 48 | 128 of 257 | fp8 |"), std::string::npos) << f.output;
  EXPECT_EQ(f.output.find("| model |"), std::string::npos) << f.output;
  auto bad = run_rar("bench attention --device cpu --fill 300");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("--fill 300 exceeds the cache's 257 slots"), std::string::npos) << bad.output;
  auto kern = run_rar("bench attention --device cpu --attention-kernel tiles");
  EXPECT_NE(kern.status, 0);
  EXPECT_NE(kern.output.find("expected block, warp, split or auto, got 'tiles'"), std::string::npos) << kern.output;
  // the split kernel runs only inside a step: asking for it here is an error, not a warp row labelled split
  auto split = run_rar("bench attention --device cpu --attention-kernel split");
  EXPECT_NE(split.status, 0);
  EXPECT_NE(split.output.find("runs only inside a step"), std::string::npos) << split.output;
}

TEST(Cli, ErrorsAreOneLine) {
  TempDir dir;
  io::write_npy(dir / "bad_classes.npy", torch::tensor({3, 7, 0, 10}, torch::kInt64));
  struct Case {
    std::string args, needle;
  } cases[] = {
      {"score --generator " + (dir / "missing.bin") + " --tokens " + shared_ref("ref_tokens.npy") + " --classes " +
           shared_ref("ref_classes.npy"), "missing.bin: cannot open"},
      {"score --generator " + shared_ref("tiny_rar.bin") + " --tokens " + shared_ref("ref_tokens.npy") +
           " --classes " + (dir / "bad_classes.npy"), "classes: ids must lie in [0, 10)"},
      {"score " + ref_args() + " --device tpu", "--device: expected auto, cpu, cuda or cuda:N"},
      {"score " + ref_args() + " --precision fp8", "--precision: expected fp32, tf32, bf16 or fp16"},
      {"info " + fixture("evil_system.pt"), "refusing global 'posix.system'"},
      {"score " + ref_args() + " --out " + (dir / "no/such/dir/x.npy"), "cannot open for writing"},
  };
  for (auto& c : cases) {
    auto r = run_rar(c.args);
    EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
    auto err = r.output.substr(r.output.find("rar: error: ") == std::string::npos ? 0 : r.output.find("rar: error: "));
    EXPECT_EQ(err.rfind("rar: error: ", 0), 0u) << r.output;
    EXPECT_NE(err.find(c.needle), std::string::npos) << r.output;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << r.output;
  }
}
