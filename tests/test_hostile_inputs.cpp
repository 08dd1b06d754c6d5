// Hostile and broken inputs through the CLI, one test per class of docs/RELIABILITY.md's
// catalogue: every one must end with `rar: error: <one line>` and exit 1 — never a signal, a hang
// (ctest's timeout), memory far beyond the input (each run here is capped at 2 GiB of address
// space, a few hundred MiB above what LibTorch itself maps, and its peak RSS checked), or a
// half-written file of ours.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/torch.h>

#include "data/prepare.h"
#include "data/sources.h"
#include "helpers.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "io/zip.h"
#include "data/token_file.h"
#include "util/atomic_file.h"

using namespace rar;
using namespace rar::test;

namespace {

constexpr const char* kMemoryCap = "2000000";  // KiB of address space (ulimit -v)
constexpr long kMaxRssKiB = 1536 * 1024;        // peak resident memory of any run here

// `rar <args>` with its address space capped where that leaves room to start (a CUDA build maps
// more than the cap before main; there only the resident-memory check below applies). Every run's
// peak RSS must stay under kMaxRssKiB: RUSAGE_CHILDREN holds the largest of this test's children.
RunResult run_capped(const std::string& args) {
  static const bool cap_fits =
      run_shell(std::string("(ulimit -v ") + kMemoryCap + " && exec " + RAR_BIN + " --version) 2>&1").status == 0;
  const std::string limit = cap_fits ? std::string("ulimit -v ") + kMemoryCap + " && " : "";
  auto r = run_shell("(" + limit + "exec " + RAR_BIN + " " + args + ") 2>&1");
  struct rusage use {};
  ::getrusage(RUSAGE_CHILDREN, &use);
  EXPECT_LE(use.ru_maxrss, kMaxRssKiB) << "rar " << args.substr(0, 200) << ": peak RSS " << use.ru_maxrss << " KiB";
  return r;
}

// Exit 1, one line on stderr starting "rar: error:", containing `needle`.
void expect_rejected(const RunResult& r, const std::string& needle, const std::string& what) {
  EXPECT_EQ(r.status, 1) << what << ": " << r.output;
  auto at = r.output.find("rar: error: ");
  ASSERT_NE(at, std::string::npos) << what << ": " << r.output;
  const std::string line = r.output.substr(at);
  EXPECT_EQ(line.find('\n'), line.size() - 1) << what << ": not one line: " << line;
  EXPECT_NE(line.find(needle), std::string::npos) << what << ": expected '" << needle << "' in: " << line;
}

std::string regression(const std::string& target, const std::string& name) {
  return fixture("fuzz-regressions/" + target + "/" + name);
}

std::string tiny_rar() { return shared_ref("tiny_rar.bin"); }
std::string tiny_vq() { return shared_ref("tiny_vq.bin"); }

// A torch.save-style zip holding `pickle` as archive/data.pkl (and the given storages).
std::string torch_zip(const TempDir& dir, const std::string& name, const std::string& pickle,
                      const std::vector<std::pair<std::string, std::string>>& storages = {}) {
  io::ZipWriter z(dir / name);
  z.add("archive/data.pkl", pickle);
  z.add("archive/byteorder", "little");
  for (auto& [k, v] : storages) z.add("archive/data/" + k, v);
  z.commit();
  return dir / name;
}

}  // namespace

// ---------------------------------------------------------------- checkpoints

TEST(Hostile, PicklesThatImportCodeAreRefusedAndNothingRuns) {
  TempDir dir;
  for (const char* name : {"os-system", "subprocess-check-output", "builtins-eval-stack-global",
                           "torchscript-build-tensor", "builtins-getattr"}) {
    auto r = run_capped("info " + torch_zip(dir, std::string(name) + ".pt", read_file(regression("pickle", name))));
    expect_rejected(r, "refusing global", name);
  }
  // the evil fixtures made by PyTorch itself (tests/data/make_fixtures.py)
  expect_rejected(run_capped("info " + fixture("evil_system.pt")), "refusing global", "evil_system.pt");
  expect_rejected(run_capped("info " + fixture("evil_eval.pt")), "refusing global", "evil_eval.pt");
}

TEST(Hostile, PickleOpcodesOnUnexpectedObjectsAreRefused) {
  TempDir dir;
  for (const char* name : {"setitem-on-list", "build-on-list", "append-after-nesting", "self-containing-list",
                           "reduce-on-a-string"}) {
    auto r = run_capped("info " + torch_zip(dir, std::string(name) + ".pt", read_file(regression("pickle", name))));
    expect_rejected(r, "pickle offset", name);
  }
}

TEST(Hostile, DeepAndHugePicklesCostBoundedMemoryAndStack) {
  TempDir dir;
  auto zipped = [&](const char* name) { return torch_zip(dir, std::string(name) + ".pt", read_file(regression("pickle", name))); };
  expect_rejected(run_capped("info " + zipped("deep-tuple-100k")), "nested more than 100 levels", "deep tuple");
  expect_rejected(run_capped("info " + zipped("deep-list-50k")), "nested more than 100 levels", "deep list");
  // a memo index of 2^26 used to allocate the memo up to it (1.2 GB); now it is one map entry
  expect_rejected(run_capped("info " + zipped("memo-index-2e26")), "not a state dict", "memo index");
  expect_rejected(run_capped("info " + zipped("one-million-tuples")), "objects", "object budget");
  expect_rejected(run_capped("info " + zipped("storage-2e62-elements")), "storage", "storage of 2^62 elements");
}

TEST(Hostile, StoragesMustHoldExactlyWhatThePickleDeclares) {
  TempDir dir;
  expect_rejected(run_capped("info " + regression("torch_zip", "storage-declares-more-than-archive.pt")),
                  "holds 16 bytes, expected 4000000", "storage larger than the archive");
  expect_rejected(run_capped("info " + regression("torch_zip", "half-storage-over-float-bytes.pt")),
                  "holds 8 bytes, expected 4", "Half storage over float bytes");
  expect_rejected(run_capped("info " + fixture("short_storage.pt")), "expected", "short storage");
  expect_rejected(run_capped("info " + fixture("view_out_of_range.pt")), "exceeds its storage", "view past storage");
}

TEST(Hostile, ZipMembersThatLieAboutTheirSizeAreRefused) {
  TempDir dir;
  // A stored member whose central-directory entry claims 4 GB: patch the uncompressed size.
  const std::string path = torch_zip(dir, "lie.pt", read_file(fixture("not_state_dict.pt")).substr(0, 0) + "\x80\x02}.");
  std::string z = read_file(path);
  const auto cd = z.find("PK\x01\x02");
  ASSERT_NE(cd, std::string::npos);
  z.replace(cd + 24, 4, "\xf0\xff\xff\xff");  // uncompressed size of the first entry
  write_bytes(path, z);
  expect_rejected(run_capped("info " + path), "", "stored member with a lying size");
  // a deflated member that really inflates to 20 MB of zeros: memory follows what is read, and
  // the npy header check stops it before inflating at all
  auto r = run_capped("score --generator " + tiny_rar() + " --tokens " + regression("npz", "deflate-bomb-200MB") +
                      " --classes " + regression("npz", "deflate-bomb-200MB"));
  expect_rejected(r, "", "deflate bomb");
}

TEST(Hostile, TruncatedAndBitFlippedCheckpointsAreOneLineErrors) {
  TempDir dir;
  const std::string good = read_file(tiny_rar());
  torch::manual_seed(5);
  for (int i = 0; i < 12; ++i) {
    std::string bad = good;
    if (i < 4) {
      bad.resize(static_cast<size_t>(good.size() * (i + 1) / 5));  // truncations
    } else {
      const auto at = static_cast<size_t>(torch::randint(0, static_cast<int64_t>(good.size()), {1}).item<int64_t>());
      bad[at] = static_cast<char>(bad[at] ^ (1 << (i % 8)));  // one bit flipped
    }
    const std::string p = dir / ("bad" + std::to_string(i) + ".bin");
    write_bytes(p, bad);
    auto r = run_capped("info " + p + " --no-tensors");
    // a flip inside tensor data changes numbers, not structure (the zip CRC catches it when read)
    if (r.status == 0) continue;
    expect_rejected(r, p, "corrupted checkpoint " + std::to_string(i));
  }
}

TEST(Hostile, SafetensorsHeadersAreCheckedBeforeAnyAllocation) {
  expect_rejected(run_capped("info " + regression("safetensors", "duplicate-names")), "names the tensor 'a' twice",
                  "duplicate names");
  expect_rejected(run_capped("info " + regression("safetensors", "overlapping-offsets")), "overlaps", "overlap");
  expect_rejected(run_capped("info " + regression("safetensors", "shape-overflow")), "overflows", "shape overflow");
  expect_rejected(run_capped("info " + regression("safetensors", "deep-json")), "nests deeper", "deep JSON");
  auto r = run_capped("info " + regression("safetensors", "name-30k-digits") + " --no-tensors");
  EXPECT_EQ(r.status, 0) << r.output;  // long but valid: read, no std::regex blow-up
}

// ---------------------------------------------------------------- arrays, images, datasets

TEST(Hostile, NpyHeadersWithLongTextOrHugeShapesAreRejected) {
  for (const auto& [name, needle] : std::vector<std::pair<std::string, std::string>>{
           {"header-60k-chars", "truncated .npy data"},  // legal header, 4 bytes of data for shape (1,)... then data
           {"shape-overflow", "too large"},
           {"shape-30k-digits", "not a non-negative integer"}}) {
    auto r = run_capped("score --generator " + tiny_rar() + " --tokens " + regression("npy", name) + " --classes " +
                        regression("npy", name));
    EXPECT_NE(r.status, -1) << name << ": " << r.output;
    if (name != "header-60k-chars") expect_rejected(r, needle, name);
    else EXPECT_EQ(r.status, 1) << r.output;
  }
}

TEST(Hostile, ImagesWithAbsurdHeadersFailBeforeAllocating) {
  TempDir dir;
  expect_rejected(run_capped("encode --tokenizer " + tiny_vq() + " --images " +
                             regression("png", "header-100000x100000") + " --out " + dir / "t.npy"),
                  "100000 x 100000 pixels", "PNG 100000x100000");
  expect_rejected(run_capped("encode --tokenizer " + tiny_vq() + " --images " +
                             regression("jpeg", "truncated-20000x20000") + " --out " + dir / "t.npy"),
                  "20000 x 20000 pixels", "JPEG 20000x20000");
  // a small valid JPEG cut short: libjpeg would pad it with grey; we refuse it
  const std::string jpg = dir / "ok.jpg";
  io::write_image(jpg, torch::randint(0, 255, {64, 64, 3}).to(torch::kUInt8));
  write_bytes(dir / "cut.jpg", read_file(jpg).substr(0, read_file(jpg).size() / 2));
  expect_rejected(run_capped("encode --tokenizer " + tiny_vq() + " --images " + dir / "cut.jpg" + " --out " +
                             dir / "t.npy"),
                  "Premature end", "truncated JPEG");
  EXPECT_FALSE(path_exists(dir / "t.npy"));
}

TEST(Hostile, ImageFoldersWithLoopsDevicesAndPipesAreOneLineErrors) {
  TempDir dir;
  make_dirs(dir / "data/cats");
  io::write_image(dir / "data/cats/a.png", torch::zeros({8, 8, 3}, torch::kUInt8));
  const std::string tokenize = "tokenize --tokenizer " + tiny_vq() + " --data " + dir / "data" + " --out " + dir / "x.rartok";
  // a class folder that is a symlink to itself (ELOOP)
  ASSERT_EQ(::symlink((dir / "data/self").c_str(), (dir / "data/self").c_str()), 0);
  expect_rejected(run_capped(tokenize), "symbolic links", "symlink loop");
  ::unlink((dir / "data/self").c_str());
  // an "image" that is /dev/zero, and one that is a named pipe: reading either would never end
  make_dirs(dir / "data/dogs");
  ASSERT_EQ(::symlink("/dev/zero", (dir / "data/dogs/zero.png").c_str()), 0);
  expect_rejected(run_capped(tokenize), "not a regular file", "/dev/zero as an image");
  ::unlink((dir / "data/dogs/zero.png").c_str());
  ASSERT_EQ(::mkfifo((dir / "data/dogs/pipe.png").c_str(), 0644), 0);
  expect_rejected(run_capped(tokenize), "not a regular file", "named pipe as an image");
  EXPECT_FALSE(path_exists(dir / "x.rartok"));
}

TEST(Hostile, TokenFilesWithOutOfRangeIdsOrSizesAreRejectedAtOpen) {
  TempDir dir;
  const std::string args = " --out " + dir / "run" + " --device cpu --steps 1 model.vq_model.codebook_size=16"
                           " model.generator.hidden_size=32 model.generator.num_hidden_layers=1"
                           " model.generator.num_attention_heads=2 model.generator.intermediate_size=32"
                           " model.generator.image_seq_len=2 model.generator.condition_num_classes=3";
  expect_rejected(run_capped("train --data " + regression("rartok", "label-equals-classes") + args),
                  "class ids span [0, 3], outside [0, 3)", "label = C");
  expect_rejected(run_capped("train --data " + regression("rartok", "negative-label") + args), "outside [0, 3)",
                  "negative label");
  expect_rejected(run_capped("train --data " + regression("rartok", "token-above-vocabulary") + args),
                  "token id 16 outside [0, 16)", "token = V");
  expect_rejected(run_capped("train --data " + regression("rartok", "count-2e62") + args), "out of range", "N = 2^62");
}

TEST(Hostile, GzipIdxThatClaimsMoreThanItHoldsIsRejected) {
  TempDir dir;
  const std::string images = dir / "x-images-idx3-ubyte.gz";
  write_bytes(images, read_file(regression("idx_gz", "header-claims-4x2e32")));
  write_bytes(dir / "x-labels-idx1-ubyte.gz", read_file(images));
  expect_rejected(run_capped("tokenize --tokenizer " + tiny_vq() + " --data " + images + " --out " + dir / "x.rartok"),
                  "IDX", "gzip IDX");
}

// ---------------------------------------------------------------- configs and the command line

TEST(Hostile, YamlBombsAndLongScalarsAreBounded) {
  expect_rejected(run_capped("train --config " + regression("config", "billion-laughs") + " --print-config"),
                  "aliases are expanded", "billion laughs");
  expect_rejected(run_capped("train --config " + regression("config", "reference-fanout") + " --print-config"),
                  "references are resolved", "${...} fan-out");
  expect_rejected(run_capped("train --config " + regression("config", "scalar-60k-digits") + " --print-config"),
                  "training.seed", "60k-digit scalar");
  expect_rejected(run_capped("train --print-config training.seed=" + std::string(60000, '9')), "training.seed",
                  "60k-digit override");
}

TEST(Hostile, NonFiniteAndOutOfRangeCliValuesAreRejected) {
  TempDir dir;
  const std::string sample = "sample --generator " + tiny_rar() + " --classes 1 --tokens-out " + dir / "t.npy";
  for (const auto& bad : {" --cfg nan", " --cfg inf", " --cfg -1", " --temperature 0", " --temperature nan",
                          " --top-p 1.5", " --top-p nan", " --batch 0", " --batch -3", " --per-class 0",
                          " --batch 99999999999999999999"})
    expect_rejected(run_capped(sample + bad), "", bad);
  for (const auto& bad : {" --size -5", " --pad -1"})
    expect_rejected(run_capped("encode --tokenizer " + tiny_vq() + " --images x.png --out y.npy" + std::string(bad)),
                    "", bad);
  expect_rejected(run_capped("train --steps 0 --print-config"), "", "--steps 0");
  expect_rejected(run_capped("train --minutes nan --print-config"), "", "--minutes nan");
  data::write_token_file(dir / "d.rartok", torch::zeros({2, 2}, torch::kInt64), torch::zeros({2}, torch::kInt64), 16, 3);
  const std::string train = "train --data " + dir / "d.rartok" + " --out " + dir / "run --device cpu --steps 1"
                            " model.vq_model.codebook_size=16 model.generator.hidden_size=32"
                            " model.generator.num_hidden_layers=1 model.generator.num_attention_heads=2"
                            " model.generator.intermediate_size=32 model.generator.image_seq_len=2"
                            " model.generator.condition_num_classes=3";
  expect_rejected(run_capped(train + " optimizer.params.beta2=1.5"), "beta", "beta2 = 1.5");
  expect_rejected(run_capped(train + " optimizer.params.learning_rate=-1"), "learning rates must be >= 0", "lr < 0");
  expect_rejected(run_capped(train + " optimizer.params.learning_rate=.nan"), "finite", "lr = NaN");
  EXPECT_FALSE(path_exists(dir / "t.npy"));
}

TEST(Hostile, CommandLineMistakesExitOneWithOneLine) {
  expect_rejected(run_capped("sample --generator " + tiny_rar() + " --no-such-flag"), "--no-such-flag", "unknown flag");
  expect_rejected(run_capped("sample"), "--generator", "missing required option");
  expect_rejected(run_capped("no-such-command"), "", "unknown subcommand");
  expect_rejected(run_capped("sample --generator " + tiny_rar() + " --classes 1,x --tokens-out /tmp/x.npy"), "'x'",
                  "bad class list");
  auto help = run_rar("sample --help");
  EXPECT_EQ(help.status, 0) << help.output;
}

TEST(Hostile, EmptyInputsAndDirectoriesAsFilesAreOneLineErrors) {
  TempDir dir;
  io::write_npy(dir / "empty.npy", torch::zeros({0, 4}, torch::kInt64));
  io::write_npy(dir / "nocls.npy", torch::zeros({0}, torch::kInt64));
  expect_rejected(run_capped("score --generator " + tiny_rar() + " --tokens " + dir / "empty.npy" + " --classes " +
                             dir / "nocls.npy"),
                  "at least one token sequence", "score with N = 0");
  make_dirs(dir / "out.safetensors");
  expect_rejected(run_capped("convert " + tiny_rar() + " " + dir / "out.safetensors"), "is a directory",
                  "convert onto a directory");
  expect_rejected(run_capped("info " + dir.path()), "is a directory", "info on a directory");
  for (const auto& n : list_dir(dir.path())) EXPECT_EQ(n.find(".tmp-"), std::string::npos) << n;
}

// Errors about one image name its file: images of two sizes in one batch (no crop), and an
// image with more channels than the tokenizer reads; nothing is written.
TEST(Hostile, ImageErrorsNameTheFile) {
  TempDir dir;
  make_dirs(dir / "sizes/a");
  io::write_image(dir / "sizes/a/large.png", torch::zeros({32, 32, 3}, torch::kUInt8));
  io::write_image(dir / "sizes/a/small.png", torch::zeros({16, 16, 3}, torch::kUInt8));
  expect_rejected(run_capped("tokenize --tokenizer " + tiny_vq() + " --data " + dir / "sizes" + " --out " +
                             dir / "x.rartok"),
                  "sizes/a/small.png: prepares to 16x16, " + dir / "sizes/a/large.png" + " to 32x32", "mixed sizes");
  expect_rejected(run_capped("encode --tokenizer " + tiny_vq() + " --images " + dir / "sizes" + " --out " + dir / "t.npy"),
                  "sizes/a/small.png: prepares to 16x16", "mixed sizes (encode)");
  EXPECT_FALSE(path_exists(dir / "x.rartok"));
  EXPECT_FALSE(path_exists(dir / "t.npy"));
  // a colour image for a one-channel tokenizer (the loading every tokenizer command shares)
  make_dirs(dir / "rgb/a");
  io::write_image(dir / "rgb/a/colour.png", torch::zeros({8, 8, 3}, torch::kUInt8));
  auto src = data::open_source(dir / "rgb");
  std::string msg;
  try {
    data::load_range(*src, 0, 1, 0, 1, 0);
  } catch (const std::exception& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("rgb/a/colour.png: an image of 3 channels; the tokenizer expects 1"), std::string::npos) << msg;
}
