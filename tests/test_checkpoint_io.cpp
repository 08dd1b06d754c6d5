// Checkpoint reading: real torch.save files (reference), emulated PyTorch 1.x / protocol-4 files,
// safetensors round trips, and every kind of bad file giving a one-line error.
#include <torch/torch.h>

#include "helpers.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "io/zip.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;

TEST(TorchCheckpoint, ReadsReferenceGeneratorFromPyTorch2) {
  auto sd = io::read_checkpoint(shared_ref("tiny_rar.bin"));
  EXPECT_EQ(sd.size(), 45u);
  EXPECT_EQ(sd.names().front(), "cls_token");
  EXPECT_EQ(sd.at("pos_embed").sizes(), (std::vector<int64_t>{1, 1280, 64}));
  EXPECT_EQ(sd.at("blocks.1.adaLN_modulation.1.weight").sizes(), (std::vector<int64_t>{384, 64}));
  EXPECT_EQ(sd.at("lm_head.weight").scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::isfinite(sd.at("embeddings.weight")).all().item<bool>());
}

static void expect_mixed_fixture(const io::StateDict& sd) {
  auto f32 = torch::arange(6, torch::kFloat32).reshape({2, 3});
  EXPECT_TRUE(sd.at("w.f32").equal(f32));
  EXPECT_TRUE(sd.at("w.transposed").equal(f32.t()));
  EXPECT_FALSE(sd.at("w.transposed").is_contiguous());
  EXPECT_EQ(sd.at("w.f16").scalar_type(), torch::kFloat16);
  EXPECT_TRUE(sd.at("w.f16").to(torch::kFloat32).equal(torch::tensor({0.5f, -1.25f, 2.0f})));
  EXPECT_EQ(sd.at("w.bf16").scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(sd.at("w.bf16").to(torch::kFloat32).equal(torch::tensor({1.0f, -2.0f, 0.15625f, 3.0f}).reshape({2, 2})));
  EXPECT_TRUE(sd.at("w.i64").equal(torch::tensor(std::vector<int64_t>{-7, 0, 5000000000LL})));
  EXPECT_TRUE(sd.at("w.f64").equal(torch::tensor({0.1, 0.2, 0.3, 0.4}, torch::kFloat64).reshape({2, 2})));
  EXPECT_TRUE(sd.at("w.u8").equal(torch::tensor({0, 1, 2, 254, 255}).to(torch::kUInt8)));
  EXPECT_TRUE(sd.at("w.bool").equal(torch::tensor({true, false, true})));
  EXPECT_TRUE(sd.at("shared.a").equal(torch::tensor({10.f, 11.f})));
  EXPECT_TRUE(sd.at("shared.b").equal(torch::tensor({12.f, 13.f, 14.f})));
  EXPECT_TRUE(sd.at("param").equal(torch::tensor({11.f, 12.f, 13.f, 14.f}).reshape({2, 2})));
  EXPECT_EQ(sd.at("scalar").dim(), 0);
  EXPECT_EQ(sd.at("scalar").item<float>(), 14.f);
  // Views of one storage share memory, as in PyTorch.
  EXPECT_EQ(sd.at("shared.a").data_ptr<float>() + 2, sd.at("shared.b").data_ptr<float>());
}

TEST(TorchCheckpoint, ReadsPyTorch1xStyleNestedCheckpoint) {
  auto sd = io::read_checkpoint(fixture("pt1x_nested.pt"));
  EXPECT_EQ(sd.size(), 12u);
  expect_mixed_fixture(sd);
}

TEST(TorchCheckpoint, ReadsProtocol4Pickles) { expect_mixed_fixture(io::read_checkpoint(fixture("pt_proto4.pt"))); }

TEST(TorchCheckpoint, ReadsTheLegacyPre16Format) {
  EXPECT_EQ(io::detect_checkpoint_format(fixture("pt_legacy.pt")), io::CheckpointFormat::TorchLegacy);
  expect_mixed_fixture(io::read_checkpoint(fixture("pt_legacy.pt")));
  // Truncated data is one clear error.
  TempDir dir;
  std::string bytes = read_bytes(fixture("pt_legacy.pt"));
  write_bytes(dir / "cut.pt", bytes.substr(0, bytes.size() - 3));
  EXPECT_RAR_ERROR(io::read_checkpoint(dir / "cut.pt"), "truncated in storage");
}

TEST(TorchCheckpoint, RefusesToExecuteArbitraryGlobals) {
  EXPECT_RAR_ERROR(io::read_checkpoint(fixture("evil_system.pt")), "refusing global 'posix.system'");
  EXPECT_RAR_ERROR(io::read_checkpoint(fixture("evil_eval.pt")), "refusing global 'builtins.eval'");
}

TEST(TorchCheckpoint, BadFilesGiveOneLineErrors) {
  EXPECT_RAR_ERROR(io::read_checkpoint(fixture("not_state_dict.pt")), "not a state dict (the pickle holds a list)");
  EXPECT_RAR_ERROR(io::read_checkpoint(fixture("short_storage.pt")), "storage '0' holds 8 bytes, expected 400");
  EXPECT_RAR_ERROR(io::read_checkpoint(fixture("view_out_of_range.pt")), "exceeds its storage of 4 elements");
  EXPECT_RAR_ERROR(io::read_checkpoint(fixture("missing_storage.pt")), "storage '0' is missing");
  EXPECT_RAR_ERROR(io::read_checkpoint(fixture("legacy.pt")), "legacy.pt (protocol version): truncated pickle");
  EXPECT_RAR_ERROR(io::read_checkpoint(fixture("does_not_exist.bin")), "cannot open");
}

TEST(TorchCheckpoint, TruncatedAndCorruptedFilesAreRejected) {
  TempDir dir;
  std::string b = read_bytes(shared_ref("tiny_rar.bin"));
  write_bytes(dir / "trunc.bin", b.substr(0, b.size() - 1000));
  EXPECT_RAR_ERROR(io::read_checkpoint(dir / "trunc.bin"), "not a readable zip archive");
  write_bytes(dir / "short.bin", b.substr(0, 3));
  EXPECT_RAR_ERROR(io::read_checkpoint(dir / "short.bin"), "not a readable zip archive");
  // Flip bytes inside the pickle: the zip CRC check catches it before the unpickler sees it.
  std::string corrupt = b;
  size_t pkl = corrupt.find("collections");
  ASSERT_NE(pkl, std::string::npos);
  corrupt[pkl] ^= 0x20;
  write_bytes(dir / "crc.bin", corrupt);
  EXPECT_RAR_ERROR(io::read_checkpoint(dir / "crc.bin"), "read failed");
}

// Weights back to PyTorch (`rar convert x.safetensors x.bin`): the file torch.save writes — a zip
// of <name>/data.pkl (protocol 2: a plain dict of tensors rebuilt by
// torch._utils._rebuild_tensor_v2 over typed storages, no TorchScript type tags, which
// weights_only loading refuses), one storage member per tensor, version and byteorder records —
// and our reader reads it back bit for bit in every dtype, in order.
TEST(TorchCheckpoint, WritesWhatTorchSaveWritesAndReadsItBack) {
  TempDir dir;
  auto ref = io::read_checkpoint(shared_ref("tiny_rar.bin"));
  io::StateDict mixed;
  mixed.set("a.f32", torch::randn({3, 4}));
  mixed.set("a.bf16", torch::randn({5}).to(torch::kBFloat16));
  mixed.set("a.f16", torch::randn({2, 2}).to(torch::kFloat16));
  mixed.set("a.i64", torch::tensor(std::vector<int64_t>{-7, 0, 5000000000LL}));
  mixed.set("a.transposed", torch::randn({3, 2}).t());  // written contiguous
  mixed.set("a.scalar", torch::tensor(2.5f));
  for (auto* sd : {&ref, &mixed}) {
    io::write_torch_checkpoint(dir / "x.bin", *sd);
    auto back = io::read_checkpoint(dir / "x.bin");
    ASSERT_EQ(back.names(), sd->names());
    for (const auto& n : sd->names()) {
      EXPECT_EQ(back.at(n).scalar_type(), sd->at(n).scalar_type()) << n;
      EXPECT_TRUE(back.at(n).equal(sd->at(n))) << n;
    }
  }
  io::ZipReader zip(dir / "x.bin");
  std::string root;
  for (const auto& n : zip.names())
    if (n.size() > 9 && n.substr(n.size() - 9) == "/data.pkl") root = n.substr(0, n.size() - 9);
  ASSERT_FALSE(root.empty());
  EXPECT_TRUE(zip.has(root + "/version"));
  EXPECT_TRUE(zip.has(root + "/byteorder"));
  EXPECT_EQ(zip.read(root + "/byteorder"), "little");
  for (size_t i = 0; i < mixed.size(); ++i) EXPECT_TRUE(zip.has(root + "/data/" + std::to_string(i))) << i;
  const std::string pkl = zip.read(root + "/data.pkl");
  EXPECT_EQ(pkl.substr(0, 3), std::string("\x80\x02}", 3));  // PROTO 2, EMPTY_DICT
  EXPECT_NE(pkl.find("torch._utils\n_rebuild_tensor_v2\n"), std::string::npos);
  EXPECT_NE(pkl.find("torch\nBFloat16Storage\n"), std::string::npos);
  EXPECT_EQ(pkl.find("restore_type_tag"), std::string::npos);
  EXPECT_EQ(pkl.find("__torch__"), std::string::npos);
  // the CLI: a generator back to the published format, equal to the file it came from
  ASSERT_EQ(run_rar("convert " + shared_ref("tiny_rar.bin") + " " + dir / "g.safetensors").status, 0);
  auto r = run_rar("convert " + dir / "g.safetensors" + " " + dir / "g.bin");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(run_rar("info " + dir / "g.bin" + " --compare " + shared_ref("tiny_rar.bin") + " --tol 0").status, 0);
}

TEST(Safetensors, RoundTripsDtypesShapesAndMetadata) {
  TempDir dir;
  io::StateDict sd;
  sd.set("z.first", torch::randn({3, 4}));
  sd.set("a.bf16", torch::randn({5}).to(torch::kBFloat16));
  sd.set("f16", torch::randn({2, 2}).to(torch::kFloat16));
  sd.set("f64", torch::randn({2}, torch::kFloat64));
  sd.set("i64", torch::tensor(std::vector<int64_t>{-1, int64_t(1) << 40}));
  sd.set("i32", torch::tensor({-5, 5}, torch::kInt32));
  sd.set("u8", torch::tensor({0, 255}).to(torch::kUInt8));
  sd.set("b", torch::tensor({true, false}));
  sd.set("empty", torch::empty({0, 3}));
  sd.set("scalar", torch::tensor(2.5f));
  sd.set("view", torch::arange(12, torch::kFloat32).reshape({3, 4}).t());
  sd.metadata["hello"] = "world";
  io::write_safetensors(dir / "a.safetensors", sd);
  auto back = io::read_checkpoint(dir / "a.safetensors");
  EXPECT_EQ(back.names(), sd.names());  // written order is kept
  for (const auto& n : sd.names()) {
    EXPECT_EQ(back.at(n).scalar_type(), sd.at(n).scalar_type()) << n;
    EXPECT_TRUE(back.at(n).equal(sd.at(n))) << n;
  }
  EXPECT_EQ(back.metadata.at("hello"), "world");
  // No temp file is left behind.
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"a.safetensors"});
  // A dict without tensors (an optimizer without state) is "{}", and reads back as one.
  io::write_safetensors(dir / "empty.safetensors", io::StateDict{});
  EXPECT_TRUE(io::read_checkpoint(dir / "empty.safetensors").names().empty());
}

TEST(Safetensors, CorruptFilesGiveOneLineErrors) {
  TempDir dir;
  io::StateDict sd;
  sd.set("w", torch::arange(16, torch::kFloat32));
  io::write_safetensors(dir / "a.safetensors", sd);
  std::string b = read_bytes(dir / "a.safetensors");
  write_bytes(dir / "trunc.safetensors", b.substr(0, b.size() - 4));
  EXPECT_RAR_ERROR(io::read_safetensors(dir / "trunc.safetensors"), "outside the data");
  std::string huge = b;
  huge[5] = 0x7f;
  write_bytes(dir / "huge.safetensors", huge);
  EXPECT_RAR_ERROR(io::read_safetensors(dir / "huge.safetensors"), "does not fit the file");
  std::string json = b;
  json[8] = '[';
  write_bytes(dir / "json.safetensors", json);
  EXPECT_RAR_ERROR(io::read_safetensors(dir / "json.safetensors"), "header is not a JSON object");
  std::string dtype = b;
  dtype.replace(dtype.find("\"F32\""), 5, "\"X32\"");
  write_bytes(dir / "dtype.safetensors", dtype);
  EXPECT_RAR_ERROR(io::read_safetensors(dir / "dtype.safetensors"), "unsupported dtype 'X32'");
  std::string shape = b;
  shape.replace(shape.find("[16]"), 4, "[15]");
  write_bytes(dir / "shape.safetensors", shape);
  EXPECT_RAR_ERROR(io::read_safetensors(dir / "shape.safetensors"), "64 bytes for shape [15]");
  write_bytes(dir / "tiny.safetensors", "abc");
  EXPECT_RAR_ERROR(io::read_checkpoint(dir / "tiny.safetensors"), "too short to be a checkpoint");
}

TEST(AtomicWrite, FailedWriteKeepsTheOldFile) {
  TempDir dir;
  io::StateDict good;
  good.set("w", torch::ones({4}));
  io::write_safetensors(dir / "m.safetensors", good);
  io::StateDict bad;
  bad.set("w", torch::ones({2}, torch::kComplexFloat));  // unsupported: fails before anything is written
  EXPECT_RAR_ERROR(io::write_safetensors(dir / "m.safetensors", bad), "cannot store tensors of type");
  EXPECT_TRUE(io::read_safetensors(dir / "m.safetensors").at("w").equal(torch::ones({4})));
  EXPECT_RAR_ERROR(io::write_safetensors(dir / "no/such/dir/m.safetensors", good), "cannot open for writing");
}
