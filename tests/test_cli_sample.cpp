// `rar sample` end to end: greedy tokens equal the reference, image outputs (grid, directory,
// ADM .npz), interrupted .npz runs resume to the same result, and one-line errors.
#include <unistd.h>

#include <torch/torch.h>

#include "helpers.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/plot.h"
#include "model/vqgan.h"

using namespace rar;
using namespace rar::test;

namespace {
std::string gen() { return " --generator " + shared_ref("tiny_rar.bin") + " "; }
std::string tok() { return " --tokenizer " + shared_ref("tiny_vq.bin") + " "; }
}  // namespace

// What the command alone proves (the sampler's exactness, unguided paths and the static engine
// are Sampler.* tests): the flags reach the sampler — guidance, its power and greedy top-k give
// the reference's guided greedy tokens through --tokens-out.
TEST(CliSample, GreedyTokensEqualReference) {
  TempDir dir;
  auto ref = io::read_npy(shared_ref("ref_greedy.npy"));
  auto r = run_rar("sample" + gen() + "--classes 3,7,0,9 --cfg 3.0 --cfg-power 1.0 --top-k 1 --device cpu --tokens-out " +
                   (dir / "g0.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(io::read_npy(dir / "g0.npy").equal(ref[0]));
}

// The decoder options: bf16 weights, channels-last, 1 image at a time: the same images as the
// default fp32 decoding within bf16 rounding; and the fp8 KV cache runs from the CLI with greedy
// tokens mostly equal to the exact cache's.
TEST(CliSample, DecoderAndKvCacheOptions) {
  TempDir dir;
  const std::string common = "sample" + gen() + tok() + "--classes 1,2 --per-class 2 --cfg 4 --seed 3 --device cpu ";
  ASSERT_EQ(run_rar(common + "--out " + (dir / "a/")).status, 0);
  auto r = run_rar(common + "--decode-precision bf16 --channels-last --decode-batch 1 --out " + (dir / "b/"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto written = list_dir(dir / "a");
  ASSERT_EQ(written.size(), 4u);  // 2 classes x 2
  ASSERT_EQ(list_dir(dir / "b"), written);
  for (const auto& name : written) {
    auto a = io::read_image(dir / "a/" + name).to(torch::kInt32), b = io::read_image(dir / "b/" + name).to(torch::kInt32);
    // (tiny_vq: 1.3-1.4 levels on average; a wrong decode is tens)
    EXPECT_LE((a - b).abs().to(torch::kFloat64).mean().item<double>(), 2.0) << name;
  }
  const std::string greedy = "sample" + gen() + "--classes 3,7,0,9 --cfg 3.0 --cfg-power 1.0 --top-k 1 --device cpu ";
  ASSERT_EQ(run_rar(greedy + "--tokens-out " + (dir / "exact.npy")).status, 0);
  r = run_rar(greedy + "--kv-cache fp8 --engine static --tokens-out " + (dir / "fp8.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto same = io::read_npy(dir / "exact.npy").eq(io::read_npy(dir / "fp8.npy")).to(torch::kFloat64).mean();
  EXPECT_GT(same.item<double>(), 0.9);  // (99.4%; greedy paths drift apart after a differing token)
}

// What the command alone proves: its three image outputs (a labelled grid, a folder of PNGs, the
// tokens) hold the same samples.
TEST(CliSample, GridDirectoryAndDecodedImagesAgree) {
  TempDir dir;
  auto r = run_rar("sample" + gen() + tok() + "--classes 1,2 --per-class 2 --cfg 4 --seed 3 --device cpu --out " +
                   (dir / "grid.png") + " --tokens-out " + (dir / "t.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("sample 4/4"), std::string::npos) << r.output;
  auto grid = io::read_image(dir / "grid.png");
  // rows = classes, labelled in a 110-pixel left margin (when built with cairo)
  const int64_t margin = io::plotting_available() ? 110 : 0;
  EXPECT_EQ(grid.sizes(), (std::vector<int64_t>{2 * 258 + 2, 2 * 258 + 2 + margin, 3}));
  ASSERT_EQ(run_rar("sample" + gen() + tok() + "--classes 1,2 --per-class 2 --cfg 4 --seed 3 --device cpu --out " +
                    (dir / "imgs/")).status, 0);
  auto names = list_dir(dir / "imgs");
  ASSERT_EQ(names.size(), 4u);
  EXPECT_EQ(names[2], "000002_class0002.png");
  // The PNG equals decoding the sampled tokens with the tokenizer.
  auto vq = model::load_vq(shared_ref("tiny_vq.bin"));
  torch::NoGradGuard ng;
  auto decoded = io::to_uint8_nhwc(vq.model->decode(io::read_npy(dir / "t.npy")));
  EXPECT_TRUE(io::read_image(dir / "imgs/" + names[2]).equal(decoded[2]));
  // Tile (row 1, col 0) of the grid is image 2.
  EXPECT_TRUE(grid.narrow(0, 2 + 258, 256).narrow(1, margin + 2, 256).equal(decoded[2]));
}

// What the command alone proves: an interrupted `--out x.npz` run resumes to the uninterrupted
// file, and a resume with other settings is refused with its shards kept.
TEST(CliSample, NpzRunResumesToTheSameResult) {
  TempDir dir;
  std::string common = "sample" + gen() + tok() + "--classes 0,5 --per-class 3 --batch 2 --seed 11 --cfg 2 --device cpu ";
  ASSERT_EQ(run_rar(common + "--out " + (dir / "full.npz")).status, 0);
  auto part = run_rar(common + "--max-batches 2 --out " + (dir / "resumed.npz"));
  ASSERT_EQ(part.status, 0) << part.output;
  EXPECT_NE(part.output.find("stopped after 2 batches"), std::string::npos) << part.output;
  EXPECT_FALSE(path_exists(dir / "resumed.npz"));
  EXPECT_EQ(list_dir(dir / "resumed.npz.parts").size(), 4u);  // the lock, manifest + 2 shards
  // A resume with different settings is refused, the shards are kept.
  auto other = run_rar("sample" + gen() + tok() + "--classes 0,5 --per-class 3 --batch 2 --seed 12 --cfg 2 --device cpu --out " +
                       (dir / "resumed.npz"));
  EXPECT_EQ(other.status, 1);
  EXPECT_NE(other.output.find("different settings (settings.seed: 11 -> 12)"), std::string::npos) << other.output;
  // so is one whose decoding or KV cache differs (they change the bytes of a shard)
  for (const char* opt : {"--decode-precision bf16 ", "--kv-cache fp8 ", "--channels-last ", "--engine static "}) {
    auto changed = run_rar(common + opt + "--out " + (dir / "resumed.npz"));
    EXPECT_EQ(changed.status, 1) << opt << changed.output;
    EXPECT_NE(changed.output.find("different settings"), std::string::npos) << opt << changed.output;
  }
  ASSERT_EQ(run_rar(common + "--out " + (dir / "resumed.npz")).status, 0);
  EXPECT_FALSE(path_exists(dir / "resumed.npz.parts"));
  auto a = io::read_npz(dir / "full.npz"), b = io::read_npz(dir / "resumed.npz");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].first, "arr_0");
  EXPECT_EQ(a[0].second.sizes(), (std::vector<int64_t>{6, 256, 256, 3}));
  EXPECT_EQ(a[0].second.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(a[1].second.equal(torch::tensor({0, 0, 0, 5, 5, 5}, torch::kInt64)));
  EXPECT_TRUE(a[0].second.equal(b[0].second));
  EXPECT_TRUE(a[1].second.equal(b[1].second));
  EXPECT_EQ(read_bytes(dir / "full.npz"), read_bytes(dir / "resumed.npz"));  // the very same bytes
  // --compress only deflates the archive: the same arrays, fewer bytes (the reader takes both)
  ASSERT_EQ(run_rar(common + "--compress --out " + (dir / "small.npz")).status, 0);
  auto c = io::read_npz(dir / "small.npz");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_TRUE(c[0].second.equal(a[0].second));
  EXPECT_TRUE(c[1].second.equal(a[1].second));
  EXPECT_LT(read_bytes(dir / "small.npz").size(), read_bytes(dir / "full.npz").size());
}

// Two processes (gloo, the torchrun environment variables): batch b is rank b % 2's, both write
// into the one parts folder, rank 0 assembles the .npz — equal to the one-process run's. Then the
// one-process run resumes a two-process run stopped early (the manifest has no rank or world).
TEST(CliSample, TwoProcessesWriteTheOneProcessNpz) {
  TempDir dir;
  std::string common = "sample" + gen() + tok() + "--classes 0,5,7 --per-class 2 --batch 2 --seed 4 --cfg 2 --device cpu ";
  ASSERT_EQ(run_rar(common + "--out " + (dir / "one.npz")).status, 0);
  auto two = [&](const std::string& out, const std::string& extra) {
    const int port = 20000 + static_cast<int>((::getpid() * 3 + out.size()) % 20000);
    auto r = run_rar_two_ranks(common + extra + "--out " + out, port, out);
    return std::make_pair(r.status, r.output);
  };
  auto [status, logs] = two(dir / "two.npz", "");
  ASSERT_EQ(status, 0) << logs;
  auto a = io::read_npz(dir / "one.npz"), b = io::read_npz(dir / "two.npz");
  ASSERT_EQ(b.size(), 2u);
  EXPECT_TRUE(a[0].second.equal(b[0].second));
  EXPECT_TRUE(a[1].second.equal(b[1].second));
  EXPECT_FALSE(path_exists(dir / "two.npz.parts"));

  auto [s2, logs2] = two(dir / "part.npz", "--max-batches 1 ");  // 2 of the 3 batches
  ASSERT_EQ(s2, 0) << logs2;
  EXPECT_NE(logs2.find("run the same command again to resume"), std::string::npos) << logs2;
  EXPECT_FALSE(path_exists(dir / "part.npz"));
  ASSERT_EQ(run_rar(common + "--out " + (dir / "part.npz")).status, 0);
  EXPECT_TRUE(io::read_npz(dir / "part.npz")[0].second.equal(a[0].second));
  // Over several processes only an .npz can be written.
  auto bad = run_rar_env("WORLD_SIZE=2 RANK=0", common + "--tokens-out " + (dir / "t.npy"));
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("writes an .npz --out"), std::string::npos) << bad.output;
}

TEST(CliSample, ErrorsAreOneLine) {
  TempDir dir;
  model::VQConfig c;
  c.base_channels = 32, c.channel_mult = {1, 1, 1, 1, 1}, c.res_blocks = 1, c.z_channels = 8, c.codebook_size = 64;
  model::VQModel small(c);
  model::save_vq(dir / "vq64.safetensors", small);
  struct Case {
    std::string args, needle;
  } cases[] = {
      {"sample" + gen() + "--classes 3,10 --tokens-out " + (dir / "t.npy"), "class id 10 out of range [0, 10)"},
      {"sample" + gen() + "--classes 3 --cfg-power -1 --tokens-out " + (dir / "t.npy"), "--cfg-power: must be >= 0"},
      {"sample" + gen() + "--classes 3 --temperature 0 --tokens-out " + (dir / "t.npy"), "--temperature: must be > 0"},
      {"sample" + gen() + "--classes 3 --top-p 1.5 --tokens-out " + (dir / "t.npy"), "--top-p must lie in [1e-06, 1], got 1.5"},
      {"sample" + gen() + "--classes 3 --tokens-out " + (dir / "no/dir/t.npy"), "cannot open for writing"},
      {"sample" + gen() + "--classes 3 --out " + (dir / "g.png"), "needs --tokenizer"},
      {"sample" + gen() + "--classes 3 --tokenizer " + (dir / "vq64.safetensors") + " --out " + (dir / "g.png"),
       "tokenizer codebook (64 codes) does not match the generator's vocabulary (1024)"},
      {"sample" + gen() + "--classes x --tokens-out " + (dir / "t.npy"), "--classes: 'x' is not a class id"},
      {"sample" + gen() + "--classes 3 --kv-cache fp4 --tokens-out " + (dir / "t.npy"), "--kv-cache must be model or fp8"},
      {"sample" + gen() + tok() + "--classes 3 --decode-precision fp16 --out " + (dir / "g.png"),
       "--decode-precision: expected auto, fp32 or bf16"},
  };
  for (auto& c : cases) {
    auto r = run_rar(c.args);
    EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
    auto pos = r.output.find("rar: error: ");
    ASSERT_NE(pos, std::string::npos) << r.output;
    auto err = r.output.substr(pos);
    EXPECT_NE(err.find(c.needle), std::string::npos) << r.output;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << r.output;
  }
}
