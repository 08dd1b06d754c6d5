// npy/npz reading and writing: round trips of every dtype, NumPy-written files, bad input.
#include <torch/torch.h>

#include "helpers.h"
#include "io/npy.h"
#include "util/error.h"

using namespace rar;
using namespace rar::test;

TEST(Npy, RoundTripsEveryDtype) {
  TempDir dir;
  for (auto type : {torch::kBool, torch::kUInt8, torch::kInt8, torch::kInt16, torch::kInt32, torch::kInt64,
                    torch::kFloat16, torch::kFloat32, torch::kFloat64}) {
    auto t = (torch::arange(24, torch::kFloat64) * 7 - 30).remainder(100).reshape({2, 3, 4}).to(type);
    io::write_npy(dir / "a.npy", t);
    auto back = io::read_npy(dir / "a.npy");
    EXPECT_EQ(back.scalar_type(), type);
    EXPECT_TRUE(back.equal(t)) << c10::toString(type);
  }
}

TEST(Npy, ScalarAndEmptyAndOneDim) {
  TempDir dir;
  for (auto t : {torch::tensor(3.5), torch::empty({0, 5}), torch::arange(7, torch::kInt64)}) {
    io::write_npy(dir / "a.npy", t);
    auto back = io::read_npy(dir / "a.npy");
    EXPECT_EQ(back.sizes(), t.sizes());
    EXPECT_TRUE(back.equal(t));
  }
}

TEST(Npy, HeaderIsNumpyCompatible) {
  TempDir dir;
  io::write_npy(dir / "a.npy", torch::zeros({4, 256}, torch::kInt64));
  std::string b = read_bytes(dir / "a.npy");
  EXPECT_EQ(b.substr(0, 6), "\x93NUMPY");
  size_t hlen = static_cast<unsigned char>(b[8]) | (static_cast<unsigned char>(b[9]) << 8);
  EXPECT_EQ((10 + hlen) % 64, 0u);
  EXPECT_NE(b.find("'descr': '<i8', 'fortran_order': False, 'shape': (4, 256), }"), std::string::npos);
}

TEST(Npy, ReadsReferenceArraysWrittenByNumpy) {
  auto tokens = io::read_npy(shared_ref("ref_tokens.npy"));
  EXPECT_EQ(tokens.scalar_type(), torch::kInt64);
  EXPECT_EQ(tokens.sizes(), (std::vector<int64_t>{4, 256}));
  auto classes = io::read_npy(shared_ref("ref_classes.npy"));
  EXPECT_TRUE(classes.equal(torch::tensor({3, 7, 0, 9}, torch::kInt64)));
  auto nll = io::read_npy(shared_ref("ref_nll.npy"));
  EXPECT_EQ(nll.scalar_type(), torch::kFloat64);
  EXPECT_NEAR(nll[0][0].item<double>(), 7.0237815, 1e-6);
  auto images = io::read_npy(shared_ref("ref_vq_images.npy"));
  EXPECT_EQ(images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(images.sizes(), (std::vector<int64_t>{2, 256, 256, 3}));
}

TEST(Npy, FortranOrderIsTransposedBack) {
  TempDir dir;
  // 2x3 float32 array [[0,1,2],[3,4,5]] in Fortran (column-major) order.
  std::string header = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header += '\n';
  std::string b = std::string("\x93NUMPY\x01\x00", 8) + char(header.size()) + char(0) + header;
  for (float v : {0.f, 3.f, 1.f, 4.f, 2.f, 5.f}) b.append(reinterpret_cast<const char*>(&v), 4);
  write_bytes(dir / "f.npy", b);
  auto t = io::read_npy(dir / "f.npy");
  EXPECT_TRUE(t.equal(torch::arange(6, torch::kFloat32).reshape({2, 3})));
}

TEST(Npy, BadFilesGiveOneLineErrors) {
  TempDir dir;
  io::write_npy(dir / "good.npy", torch::arange(100, torch::kInt64));
  std::string good = read_bytes(dir / "good.npy");
  write_bytes(dir / "magic.npy", "PK" + good.substr(2));
  EXPECT_RAR_ERROR(io::read_npy(dir / "magic.npy"), "bad magic");
  write_bytes(dir / "trunc.npy", good.substr(0, good.size() - 8));
  EXPECT_RAR_ERROR(io::read_npy(dir / "trunc.npy"), "truncated .npy data");
  write_bytes(dir / "trunc_header.npy", good.substr(0, 40));
  EXPECT_RAR_ERROR(io::read_npy(dir / "trunc_header.npy"), "truncated .npy header");
  std::string be = good;
  be.replace(be.find("<i8"), 3, ">i8");
  write_bytes(dir / "be.npy", be);
  EXPECT_RAR_ERROR(io::read_npy(dir / "be.npy"), "unsupported npy dtype '>i8'");
  std::string obj = good;
  obj.replace(obj.find("<i8"), 3, "|O8");
  write_bytes(dir / "obj.npy", obj);
  EXPECT_RAR_ERROR(io::read_npy(dir / "obj.npy"), "unsupported npy dtype");
  EXPECT_RAR_ERROR(io::read_npy(dir / "nope.npy"), "nope.npy: cannot open");
}

TEST(Npz, RoundTripAndMemberSelection) {
  TempDir dir;
  auto images = torch::randint(0, 256, {3, 8, 8, 3}).to(torch::kUInt8);
  auto labels = torch::tensor({4, 1, 9}, torch::kInt64);
  io::write_npz(dir / "s.npz", {{"arr_0", images}, {"arr_1", labels}});
  auto back = io::read_npz(dir / "s.npz");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].first, "arr_0");
  EXPECT_TRUE(back[0].second.equal(images));
  EXPECT_EQ(back[1].first, "arr_1");
  EXPECT_TRUE(back[1].second.equal(labels));
  EXPECT_TRUE(io::read_array(dir / "s.npz:arr_1").equal(labels));
  EXPECT_TRUE(io::read_array(dir / "s.npz").equal(images));
  EXPECT_RAR_ERROR(io::read_array(dir / "s.npz:nope"), "no array named 'nope'");
}

TEST(Npz, CorruptArchivesAreRejected) {
  TempDir dir;
  io::write_npz(dir / "s.npz", {{"arr_0", torch::arange(1000, torch::kInt64)}});
  std::string b = read_bytes(dir / "s.npz");
  write_bytes(dir / "trunc.npz", b.substr(0, b.size() / 2));
  EXPECT_RAR_ERROR(io::read_npz(dir / "trunc.npz"), "not a readable zip archive");
  std::string flipped = b;
  flipped[200] ^= 0x55;  // inside the stored member: the CRC no longer matches
  write_bytes(dir / "crc.npz", flipped);
  EXPECT_RAR_ERROR(io::read_npz(dir / "crc.npz"), "read failed");
}
