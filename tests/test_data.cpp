// Data sources (IDX, ImageFolder, arrays), the .rartok token file format, and the tokenizer
// commands end to end (encode/decode against the reference, resumable tokenize).
#include <zlib.h>

#include <torch/torch.h>

#include "data/sources.h"
#include "data/token_file.h"
#include "helpers.h"
#include "io/image.h"
#include "io/npy.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;

namespace {
std::string idx_bytes(const torch::Tensor& t) {
  std::string b = {0, 0, 8, static_cast<char>(t.dim())};
  for (int64_t d : t.sizes())
    for (int s : {24, 16, 8, 0}) b += static_cast<char>((d >> s) & 0xff);
  b.append(static_cast<const char*>(t.contiguous().data_ptr()), t.numel());
  return b;
}
}  // namespace

TEST(Idx, ReadsPlainAndGzipAndRejectsCorruptFiles) {
  TempDir dir;
  auto images = torch::randint(0, 256, {5, 4, 3}).to(torch::kUInt8);
  auto labels = torch::tensor({1, 0, 3, 2, 1}).to(torch::kUInt8);
  write_bytes(dir / "x-images-idx3-ubyte", idx_bytes(images));
  write_bytes(dir / "x-labels-idx1-ubyte", idx_bytes(labels));
  EXPECT_TRUE(data::read_idx(dir / "x-images-idx3-ubyte").equal(images));
  gzFile gz = gzopen((dir / "y.gz").c_str(), "wb");
  std::string b = idx_bytes(images);
  gzwrite(gz, b.data(), static_cast<unsigned>(b.size()));
  gzclose(gz);
  EXPECT_TRUE(data::read_idx(dir / "y.gz").equal(images));
  auto src = data::open_source(dir / "x-images-idx3-ubyte");
  EXPECT_EQ(src->size(), 5);
  EXPECT_EQ(src->label(2), 3);
  EXPECT_EQ(src->image(0).sizes(), (std::vector<int64_t>{4, 3, 1}));
  write_bytes(dir / "t-images-idx3-ubyte", b.substr(0, b.size() - 3));
  EXPECT_RAR_ERROR(data::read_idx(dir / "t-images-idx3-ubyte"), "truncated IDX data");
  write_bytes(dir / "bad", "\x01\x02\x08\x03");
  EXPECT_RAR_ERROR(data::read_idx(dir / "bad"), "not an IDX file");
  std::string gzbad = read_bytes(dir / "y.gz");
  write_bytes(dir / "z.gz", gzbad.substr(0, gzbad.size() / 2));
  EXPECT_RAR_ERROR(data::read_idx(dir / "z.gz"), "");
}

TEST(Sources, ImageFolderUsesSortedClassNames) {
  TempDir dir;
  make_dirs(dir / "zebra");
  make_dirs(dir / "ant");
  io::write_image(dir / "zebra/1.png", torch::full({6, 5, 3}, 200, torch::kUInt8));
  io::write_image(dir / "ant/a.png", torch::full({6, 5, 3}, 10, torch::kUInt8));
  io::write_image(dir / "ant/b.jpg", torch::full({6, 5, 3}, 10, torch::kUInt8));
  auto src = data::open_source(dir.path());
  EXPECT_EQ(src->class_names(), (std::vector<std::string>{"ant", "zebra"}));
  ASSERT_EQ(src->size(), 3);
  EXPECT_EQ(src->label(2), 1);
  EXPECT_EQ(src->image(2)[0][0][0].item<uint8_t>(), 200);
  make_dirs(dir / "empty/none");
  EXPECT_RAR_ERROR(data::open_source(dir / "empty"), "a class folder without .png/.jpg images");
  // an empty class beside full ones, and a class name that cannot be written as one line
  make_dirs(dir / "mixed/cats");
  make_dirs(dir / "mixed/dogs");
  io::write_image(dir / "mixed/cats/1.png", torch::full({6, 5, 3}, 200, torch::kUInt8));
  EXPECT_RAR_ERROR(data::open_source(dir / "mixed"), "mixed/dogs: a class folder without .png/.jpg images");
  make_dirs(dir / "nl/two\nlines");
  io::write_image(dir / "nl/two\nlines/1.png", torch::full({6, 5, 3}, 200, torch::kUInt8));
  EXPECT_RAR_ERROR(data::open_source(dir / "nl"), "a class folder's name holds a line break");
}

TEST(Sources, ArraysAndNamedDatasets) {
  TempDir dir;
  auto images = torch::randint(0, 256, {4, 8, 8, 3}).to(torch::kUInt8);
  io::write_npz(dir / "d.npz", {{"arr_0", images}, {"arr_1", torch::tensor({0, 1, 2, 1}, torch::kInt64)}});
  auto src = data::open_source(dir / "d.npz");
  EXPECT_EQ(src->size(), 4);
  EXPECT_EQ(src->num_classes(), 3);
  EXPECT_TRUE(src->image(3).equal(images[3]));
  io::write_npy(dir / "f.npy", torch::zeros({2, 8, 8}, torch::kFloat32));
  EXPECT_RAR_ERROR(data::open_source(dir / "f.npy"), "images must be uint8");
  if (path_exists("/usr/share/datasets/fashion-mnist")) {  // Debian's dataset-fashion-mnist
    auto fm = data::open_source("fashion-mnist:test");
    EXPECT_EQ(fm->size(), 10000);
    EXPECT_EQ(fm->num_classes(), 10);
    EXPECT_EQ(fm->class_names()[9], "Ankle boot");
    EXPECT_EQ(fm->image(0).sizes(), (std::vector<int64_t>{28, 28, 1}));
  }
}

TEST(TokenFile, RoundTripAndMemoryMappedViews) {
  TempDir dir;
  auto tokens = torch::randint(0, 1024, {7, 16}, torch::kInt64);
  auto labels = torch::tensor({0, 1, 2, 3, 4, 5, 9}, torch::kInt64);
  data::write_token_file(dir / "a.rartok", tokens, labels, 1024, 10);
  data::TokenFile f(dir / "a.rartok");
  EXPECT_EQ(f.info().count, 7);
  EXPECT_EQ(f.info().seq_len, 16);
  EXPECT_EQ(f.info().codebook, 1024);
  EXPECT_EQ(f.info().classes, 10);
  EXPECT_TRUE(f.tokens().to(torch::kInt64).equal(tokens));
  auto [bt, bl] = f.batch(torch::tensor({6, 1}, torch::kInt64));
  EXPECT_TRUE(bt.equal(tokens.index_select(0, torch::tensor({6, 1}, torch::kInt64))));
  EXPECT_TRUE(bl.equal(torch::tensor({9, 1}, torch::kInt64)));
  f.expect(1024, 16, 10);
  EXPECT_RAR_ERROR(f.expect(512, 16), "tokens are V=1024, S=16 but the model expects V=512, S=16");
  // Wide vocabularies use 32-bit ids.
  data::write_token_file(dir / "w.rartok", tokens * 100, labels, 200000, 10);
  EXPECT_TRUE(data::TokenFile(dir / "w.rartok").tokens().to(torch::kInt64).equal(tokens * 100));
}

TEST(TokenFile, CorruptionAndBadInputAreRejected) {
  TempDir dir;
  auto tokens = torch::randint(0, 64, {3, 4}, torch::kInt64);
  data::write_token_file(dir / "a.rartok", tokens, torch::zeros({3}, torch::kInt64), 64, 1);
  std::string b = read_bytes(dir / "a.rartok");
  write_bytes(dir / "trunc.rartok", b.substr(0, b.size() - 2));
  EXPECT_RAR_ERROR(data::TokenFile(dir / "trunc.rartok"), "truncated or corrupted");
  std::string flipped = b;
  flipped[b.size() - 1] ^= 1;
  write_bytes(dir / "flip.rartok", flipped);
  EXPECT_RAR_ERROR(data::TokenFile(dir / "flip.rartok"), "checksum mismatch");
  std::string magic = b;
  magic[0] = 'X';
  write_bytes(dir / "magic.rartok", magic);
  EXPECT_RAR_ERROR(data::TokenFile(dir / "magic.rartok"), "bad magic");
  std::string version = b;
  version[8] = 9;
  write_bytes(dir / "v.rartok", version);
  EXPECT_RAR_ERROR(data::TokenFile(dir / "v.rartok"), "version 9 not supported");
  write_bytes(dir / "short.rartok", "RARTOK");
  EXPECT_RAR_ERROR(data::TokenFile(dir / "short.rartok"), "too short");
  EXPECT_RAR_ERROR(data::write_token_file(dir / "x.rartok", tokens + 64, torch::zeros({3}, torch::kInt64), 64, 1),
                   "token ids outside [0, 64)");
  EXPECT_RAR_ERROR(data::write_token_file(dir / "x.rartok", tokens, torch::ones({3}, torch::kInt64), 64, 1),
                   "class ids outside [0, 1)");
}

TEST(CliTokenizer, EncodeDecodeMatchReferenceAndTokenizeResumes) {
  TempDir dir;
  const std::string vq = " --tokenizer " + shared_ref("tiny_vq.bin") + " --device cpu ";
  auto r = run_rar("encode" + vq + "--data " + shared_ref("ref_vq_images.npy") + " --out " + (dir / "c.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(io::read_npy(dir / "c.npy").equal(io::read_npy(shared_ref("ref_vq_codes.npy"))));
  r = run_rar("decode" + vq + "--tokens " + shared_ref("ref_vq_codes.npy") + " --out " + (dir / "r.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto recon = io::read_npy(dir / "r.npy");
  EXPECT_LT((recon - io::read_npy(shared_ref("ref_vq_recon.npy"))).abs().max().item<float>(), 1e-4);
  r = run_rar("reconstruct" + vq + "--images " + shared_ref("ref_vq_images.npy") + " --out " + (dir / "g.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("PSNR"), std::string::npos);
  // tokenize: a 6-image folder in chunks of 2, interrupted after the first chunk, then resumed.
  auto images = torch::randint(0, 256, {6, 256, 256, 3}).to(torch::kUInt8);
  io::write_npz(dir / "d.npz", {{"arr_0", images}, {"arr_1", torch::tensor({0, 1, 0, 1, 1, 0}, torch::kInt64)}});
  std::string cmd = "tokenize" + vq + "--data " + (dir / "d.npz") + " --chunk 2 --batch 2 --flip --out ";
  ASSERT_EQ(run_rar(cmd + (dir / "full.rartok")).status, 0);
  auto stop = run_rar(cmd + (dir / "part.rartok") + " --max-chunks 1");
  ASSERT_EQ(stop.status, 0) << stop.output;
  EXPECT_NE(stop.output.find("stopped after 1 chunks"), std::string::npos) << stop.output;
  EXPECT_FALSE(path_exists(dir / "part.rartok"));
  EXPECT_EQ(list_dir(dir / "part.rartok.parts").size(), 3u);  // the lock, manifest + 1 chunk
  auto other = run_rar("tokenize" + vq + "--data " + (dir / "d.npz") + " --chunk 3 --out " + (dir / "part.rartok"));
  EXPECT_EQ(other.status, 1);
  EXPECT_NE(other.output.find("different settings"), std::string::npos) << other.output;
  ASSERT_EQ(run_rar(cmd + (dir / "part.rartok")).status, 0);  // resumes from chunk 1
  data::TokenFile full(dir / "full.rartok"), part(dir / "part.rartok");
  EXPECT_EQ(full.info().count, 12);  // 6 images + their mirror images
  EXPECT_TRUE(full.tokens().equal(part.tokens()));
  EXPECT_TRUE(full.labels().narrow(0, 0, 4).equal(torch::tensor({0, 0, 1, 1}, torch::kInt32)));
  EXPECT_EQ(read_bytes(dir / "full.rartok.classes.txt"), "0\n1\n");
  EXPECT_FALSE(path_exists(dir / "full.rartok.parts"));
}

TEST(CliTokenizerCuda, DecodeOnGpuMatchesReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  TempDir dir;
  auto r = run_rar("decode --tokenizer " + shared_ref("tiny_vq.bin") + " --device cuda --tokens " +
                   shared_ref("ref_vq_codes.npy") + " --out " + (dir / "r.npy"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto err = (io::read_npy(dir / "r.npy") - io::read_npy(shared_ref("ref_vq_recon.npy"))).abs().max().item<float>();
  std::printf("CLI decode on CUDA, fp32: max abs error %.2e\n", err);
  EXPECT_LT(err, 1e-4);
}

// The published code's pretokenized .jsonl: converted to the same .rartok the tensors give, every
// line checked with its number in the error, and a stopped conversion resumes to the same bytes.
TEST(JsonlTokens, ConvertsChecksEveryLineAndResumes) {
  TempDir dir;
  torch::manual_seed(3);
  const int64_t N = 11, S = 16, V = 64, C = 5;
  auto tokens = torch::randint(0, V, {N, S}, torch::kInt64);
  auto labels = torch::randint(0, C, {N}, torch::kInt64);
  std::string text;
  for (int64_t i = 0; i < N; ++i) {
    text += "{\"class_id\": " + std::to_string(labels[i].item<int64_t>()) + ", \"tokens\": [";
    for (int64_t k = 0; k < S; ++k) text += (k ? ", " : "") + std::to_string(tokens[i][k].item<int64_t>());
    text += "]}\n";
  }
  write_bytes(dir / "t.jsonl", text);
  data::write_token_file(dir / "ref.rartok", tokens, labels, V, C);
  const std::string sizes = " --codebook 64 --classes 5 --seq-len 16 --chunk-lines 3";
  auto one = run_rar("tokenize --from-jsonl " + dir / "t.jsonl" + " --out " + dir / "one.rartok" + sizes);
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_EQ(read_bytes(dir / "one.rartok"), read_bytes(dir / "ref.rartok"));
  EXPECT_FALSE(path_exists(dir / "one.rartok.parts"));
  // stopped after two chunks of three lines, then resumed
  auto part = run_rar("tokenize --from-jsonl " + dir / "t.jsonl" + " --out " + dir / "two.rartok" + sizes + " --max-chunks 2");
  ASSERT_EQ(part.status, 0) << part.output;
  EXPECT_NE(part.output.find("stopped after 2 chunks"), std::string::npos) << part.output;
  EXPECT_FALSE(path_exists(dir / "two.rartok"));
  auto rest = run_rar("tokenize --from-jsonl " + dir / "t.jsonl" + " --out " + dir / "two.rartok" + sizes);
  ASSERT_EQ(rest.status, 0) << rest.output;
  EXPECT_EQ(read_bytes(dir / "two.rartok"), read_bytes(dir / "ref.rartok"));
  // the published config's dataset.params.pretokenization: converted beside the .jsonl once, reused
  const std::string train = "train --device cpu --steps 2 model.vq_model.codebook_size=64"
                            " model.generator.hidden_size=32 model.generator.num_hidden_layers=1"
                            " model.generator.num_attention_heads=2 model.generator.intermediate_size=64"
                            " model.generator.image_seq_len=16 model.generator.condition_num_classes=5"
                            " training.per_gpu_batch_size=4 training.mixed_precision=no dataset.params.pretokenization=" +
                            dir / "t.jsonl";
  auto first = run_rar(train + " --out " + dir / "run");
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_NE(first.output.find("converting " + dir / "t.jsonl"), std::string::npos) << first.output;
  EXPECT_EQ(read_bytes(dir / "t.jsonl.rartok"), read_bytes(dir / "ref.rartok"));
  auto again = run_rar(train + " --out " + dir / "run2");
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_EQ(again.output.find("converting"), std::string::npos) << "converted twice: " << again.output;
  // every kind of bad line, named by its number
  const std::string good = text.substr(0, text.find('\n') + 1);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{\"class_id\": 5, \"tokens\": [1]}", "line 2: 'class_id' 5 outside [0, 5)"},
      {"{\"class_id\": 1, \"tokens\": [1, 2]}", "line 2: 2 tokens, expected 16"},
      {"{\"class_id\": 1, \"tokens\": [64" + std::string(15 * 3, ' ') + "]}", "line 2: 'tokens'[0] = 64 outside [0, 64)"},
      {"{\"class_id\": 1, \"tokens\": [1, \"x\"]}", "line 2: 'tokens'[1]: expected an integer"},
      {"{\"class_id\": 1, \"label\": 2}", "line 2: unknown field 'label'"},
      {"{\"class_id\": 1, \"class_id\": 2}", "line 2: 'class_id' given twice"},
      {"{\"tokens\": [1, 2", "line 2: "},
      {"[1, 2]", "line 2: expected a JSON object"},
  };
  for (const auto& [line, needle] : bad) {
    write_bytes(dir / "bad.jsonl", good + line + "\n" + good);
    auto r = run_rar("tokenize --from-jsonl " + dir / "bad.jsonl" + " --out " + dir / "bad.rartok" + sizes);
    EXPECT_EQ(r.status, 1) << line << ": " << r.output;
    EXPECT_NE(r.output.find("bad.jsonl: " + needle), std::string::npos) << line << ": " << r.output;
    EXPECT_FALSE(path_exists(dir / "bad.rartok"));
    remove_tree(dir / "bad.rartok.parts");
  }
}
