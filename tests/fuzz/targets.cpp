// targets.cpp — see targets.h.
#include "fuzz/targets.h"

#include <zlib.h>

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>

#include "data/sources.h"
#include "data/token_file.h"
#include "io/checkpoint.h"
#include "io/event_file.h"
#include "io/image.h"
#include "io/metrics_log.h"
#include "serve/request.h"
#include "data/jsonl_tokens.h"
#include "io/npy.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "io/zip.h"
#include "training/config.h"
#include "training/rar_trainer.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::fuzz {
namespace {

// A finding of the round-trip target: what was written does not read back.
[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what.c_str());
  std::abort();
}

// One scratch folder per process (TMPDIR; `make fuzz` points it at /dev/shm), removed at exit.
const std::string& scratch() {
  static const std::string dir = [] {
    std::string d = make_temp_dir("rar_fuzz_");
    static std::string keep;
    keep = d;
    std::atexit([] { remove_tree(keep); });
    return d;
  }();
  return dir;
}

// The input as a file named `name` (the readers that take a path see exactly these bytes).
std::string as_file(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = join_path(scratch(), name);
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  return path;
}

// ---------------------------------------------------------------- readers

void run_pickle(const uint8_t* data, size_t size) {
  // Storages as the checkpoint reader gives them, but without a file behind: zeros, within a bound.
  io::StorageLoader load = [](torch::ScalarType dtype, const std::string& key, int64_t numel) {
    check(numel <= (1 << 20), "storage '", key, "' too large for the fuzz target");
    return torch::zeros({numel}, torch::TensorOptions().dtype(dtype));
  };
  io::unpickle(std::string(reinterpret_cast<const char*>(data), size), load, "fuzz.pkl");
}

void run_checkpoint(const uint8_t* data, size_t size) {
  auto sd = io::read_checkpoint(as_file(data, size, "input.pt"));
  for (const auto& n : sd.names()) (void)sd.at(n).sum();  // every tensor is readable
}

void run_npy(const uint8_t* data, size_t size) { (void)io::read_array(as_file(data, size, "input.npy")); }

void run_npz(const uint8_t* data, size_t size) {
  for (auto& [name, t] : io::read_npz(as_file(data, size, "input.npz"))) (void)t.numel();
}

// An ADM batch's arr_0 streamed in blocks of rows (rar eval adm): every row the header declares
// must come out, and no block may allocate more than its rows hold.
void run_npz_rows(const uint8_t* data, size_t size) {
  io::NpzRowStream in(as_file(data, size, "input.npz"), "arr_0");
  while (in.remaining() > 0) {
    auto t = in.next(7);
    if (t.size(0) == 0) finding("npz rows: an empty block before the end");
  }
}

// The published pretokenized .jsonl (rar tokenize --from-jsonl): a small V, S and C so random
// lines can be valid; an accepted file must make a .rartok the reader accepts.
void run_jsonl_tokens(const uint8_t* data, size_t size) {
  data::JsonlSettings s;
  s.jsonl = as_file(data, size, "input.jsonl");
  s.out = join_path(scratch(), "input.rartok");
  remove_tree(s.out + ".parts");
  std::remove(s.out.c_str());
  s.codebook = 16, s.classes = 4, s.seq_len = 4, s.chunk_lines = 3, s.progress = false;
  data::convert_jsonl_tokens(s);
  data::TokenFile back(s.out);
  back.expect(16, 4, 4);
}

// TensorBoard event files: read as a test reads them (strict) and as a resume does (a cut last
// record tolerated), then the resume's rewrite of the file; what the rewrite keeps must read back.
void run_event_file(const uint8_t* data, size_t size) {
  const std::string dir = join_path(scratch(), "tb");
  remove_tree(dir);
  make_dirs(dir);
  const std::string path = as_file(data, size, "tb/events.out.tfevents.1.fuzz");
  const auto tolerant = io::read_event_file(path, /*allow_cut_tail=*/true);
  try {
    if (io::read_event_file(path).size() != tolerant.size()) finding("event file: a whole file read short");
  } catch (const Error&) {
  }
  int64_t kept = 0;
  for (const auto& r : tolerant) kept += r.file_version.empty() && r.step <= 5;
  { io::EventFileWriter w(dir, 5); }
  if (static_cast<int64_t>(io::read_event_file(path).size()) != kept + 1) finding("event file: the resume's rewrite lost records");
}

void run_image(const uint8_t* data, size_t size) {
  auto t = io::read_image(as_file(data, size, "input.img"));
  if (t.numel()) (void)t.max();
}

void run_idx(const uint8_t* data, size_t size) { (void)data::read_idx(as_file(data, size, "input-idx3-ubyte")); }

void run_idx_gz(const uint8_t* data, size_t size) { (void)data::read_idx(as_file(data, size, "input-idx3-ubyte.gz")); }

void run_rartok(const uint8_t* data, size_t size) {
  data::TokenFile f(as_file(data, size, "input.rartok"));
  if (f.info().count > 0) (void)f.batch(torch::tensor({int64_t(0), f.info().count - 1}));
}

// The user's YAML, then NUL-separated `key=value` overrides, composed as `rar train` does.
void run_config(const uint8_t* data, size_t size) {
  const std::string all(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  size_t b = 0;
  for (size_t e; (e = all.find('\0', b)) != std::string::npos; b = e + 1) parts.push_back(all.substr(b, e - b));
  parts.push_back(all.substr(b));
  const std::string path = join_path(scratch(), "input.yaml");
  std::ofstream(path, std::ios::binary | std::ios::trunc) << parts[0];
  auto cfg = training::compose_config(training::rar_defaults_yaml(), path, {parts.begin() + 1, parts.end()});
  (void)cfg.to_yaml();
  (void)cfg.get_double("lr_scheduler.params.learning_rate");
  (void)cfg.get_int("training.max_train_steps");
  (void)cfg.get_string("experiment.output_dir");
}

void run_metrics(const uint8_t* data, size_t size) { (void)io::read_metrics(as_file(data, size, "metrics.jsonl")); }

// The body of POST /v1/generate, as `rar serve` receives it from the network.
void run_serve_request(const uint8_t* data, size_t size) {
  serve::RequestLimits lim;  // the server's defaults: 1000 classes, 64 images, 64 KiB
  auto r = serve::parse_generate_request(std::string(reinterpret_cast<const char*>(data), size), lim);
  if (r.classes.empty() || static_cast<int64_t>(r.classes.size()) > lim.max_images) finding("request: image count");
  for (int64_t c : r.classes)
    if (c < 0 || c >= lim.num_classes) finding("request: class out of range");
  r.opts.validate();  // accepted settings must be ones the sampler takes
}

// ---------------------------------------------------------------- the round trip of what we write

class Bytes {
 public:
  Bytes(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  uint8_t u8() { return i_ < n_ ? d_[i_++] : 0; }
  uint32_t u16() { return u8() | (uint32_t(u8()) << 8); }
  std::string name(size_t max_len) {
    static const char kAlpha[] = "abcdefghijklmnopqrstuvwxyz0123456789._";
    std::string s(1 + u8() % max_len, 'a');
    for (auto& c : s) c = kAlpha[u8() % (sizeof kAlpha - 1)];
    return s;
  }

 private:
  const uint8_t* d_;
  size_t n_, i_ = 0;
};

torch::Tensor random_tensor(Bytes& b, torch::ScalarType type) {
  std::vector<int64_t> shape(b.u8() % 4);
  for (auto& d : shape) d = b.u8() % 6;
  auto t = torch::empty(shape, torch::TensorOptions().dtype(type));
  auto* p = static_cast<uint8_t*>(t.data_ptr());
  const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
  for (size_t i = 0; i < n; ++i) p[i] = type == torch::kBool ? (b.u8() & 1) : b.u8();
  return t;
}

// The same dtype, shape and bytes (NaN payloads included).
bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;  // no buffer to compare (and memcmp must not see a null pointer)
  auto x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), static_cast<size_t>(x.numel()) * x.element_size()) == 0;
}

void run_roundtrip(const uint8_t* data, size_t size) {
  Bytes b(data, size);
  static const torch::ScalarType kAll[] = {torch::kFloat32, torch::kFloat16, torch::kBFloat16, torch::kFloat64,
                                           torch::kInt64,   torch::kInt32,   torch::kInt16,    torch::kInt8,
                                           torch::kUInt8,   torch::kBool};
  // safetensors: any dtype we write, metadata included
  io::StateDict sd;
  std::map<std::string, torch::Tensor> expect;
  for (int i = 0, n = 1 + b.u8() % 4; i < n; ++i) {
    auto name = b.name(12);
    auto t = random_tensor(b, kAll[b.u8() % 10]);
    sd.set(name, t);
    expect[name] = t;
  }
  for (int i = 0, n = b.u8() % 3; i < n; ++i) sd.metadata[b.name(6)] = b.name(20);
  const std::string st = join_path(scratch(), "rt.safetensors");
  io::write_safetensors(st, sd);
  auto back = io::read_safetensors(st);
  if (back.size() != expect.size() || back.metadata != sd.metadata) finding("safetensors: names or metadata differ");
  for (auto& [n, t] : expect)
    if (!back.has(n) || !same_bits(back.at(n), t)) finding("safetensors: tensor '" + n + "' differs");

  // npy and npz: every dtype but bfloat16 (NumPy has none)
  io::NamedArrays arrays;
  std::map<std::string, torch::Tensor> by_name;
  for (int i = 0, n = 1 + b.u8() % 3; i < n; ++i) {
    auto name = b.name(8);
    if (by_name.count(name)) continue;
    auto t = random_tensor(b, kAll[b.u8() % 10]);
    if (t.scalar_type() == torch::kBFloat16) t = t.view(torch::kInt16);
    arrays.emplace_back(name, t);
    by_name[name] = t;
  }
  const std::string npy = join_path(scratch(), "rt.npy"), npz = join_path(scratch(), "rt.npz");
  io::write_npy(npy, arrays.front().second);
  if (!same_bits(io::read_npy(npy), arrays.front().second)) finding("npy: array differs");
  io::write_npz(npz, arrays);
  auto zback = io::read_npz(npz);
  if (zback.size() != arrays.size()) finding("npz: member count differs");
  for (size_t i = 0; i < arrays.size(); ++i)
    if (zback[i].first != arrays[i].first || !same_bits(zback[i].second, arrays[i].second))
      finding("npz: array '" + arrays[i].first + "' differs");

  // .rartok: token ids below V (2- or 4-byte storage), class ids below C
  const int64_t N = b.u8() % 6, S = 1 + b.u8() % 5, V = 1 + b.u16() * (b.u8() % 3 == 0 ? 3 : 1), C = 1 + b.u8() % 5;
  auto tokens = torch::empty({N, S}, torch::kInt64), labels = torch::empty({N}, torch::kInt64);
  for (int64_t i = 0; i < N * S; ++i) tokens.data_ptr<int64_t>()[i] = b.u16() % V;
  for (int64_t i = 0; i < N; ++i) labels.data_ptr<int64_t>()[i] = b.u8() % C;
  const std::string rt = join_path(scratch(), "rt.rartok");
  data::write_token_file(rt, tokens, labels, V, C);
  data::TokenFile f(rt);
  if (f.info().codebook != V || f.info().seq_len != S || f.info().count != N || f.info().classes != C)
    finding(".rartok: header differs");
  if (N > 0) {
    auto [tk, lb] = f.batch(torch::arange(N));
    if (!same_bits(tk, tokens) || !same_bits(lb, labels)) finding(".rartok: ids differ");
  }
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"pickle", "the restricted unpickler (data.pkl of a torch.save file)", run_pickle},
      {"torch_zip", "torch.save zip checkpoints (rar info/convert/sample --generator ...)", run_checkpoint},
      {"torch_legacy", "pre-1.6 torch.save checkpoints (e.g. FID Inception weights)", run_checkpoint},
      {"safetensors", "safetensors checkpoints", run_checkpoint},
      {"npy", ".npy arrays (rar score --tokens, ...)", run_npy},
      {"npz", ".npz archives (sample shards, FID stats, image sets)", run_npz},
      {"npz_rows", ".npz arrays streamed by rows (rar eval adm's image batches)", run_npz_rows},
      {"jsonl_tokens", "the published pretokenized .jsonl (rar tokenize --from-jsonl)", run_jsonl_tokens},
      {"event_file", "TensorBoard event files (rar train --resume rewrites the run's)", run_event_file},
      {"png", "PNG images (image folders, single images)", run_image},
      {"jpeg", "JPEG images (image folders, single images)", run_image},
      {"idx", "IDX image/label files (MNIST layout)", run_idx},
      {"idx_gz", "gzip-compressed IDX files", run_idx_gz},
      {"rartok", ".rartok token files (rar train --data)", run_rartok},
      {"config", "training YAML configs with dotted overrides (rar train --config ... key=value)", run_config},
      {"metrics", "metrics.jsonl logs (rar plot)", run_metrics},
      {"serve_request", "POST /v1/generate bodies (rar serve)", run_serve_request},
      {"roundtrip", "write then read: safetensors, npy, npz, .rartok", run_roundtrip},
  };
  return all;
}

const Target* find_target(const std::string& name) {
  for (const auto& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

bool built(const Target& t) { return std::string(t.name) != "event_file" || io::event_files_available(); }

bool run_input(const Target& t, const uint8_t* data, size_t size) {
  try {
    t.run(data, size);
    return true;
  } catch (const Error&) {
    return false;
  } catch (const c10::Error&) {
    return false;
  }
}

// ---------------------------------------------------------------- seeds

namespace {

void put(const std::string& dir, const std::string& name, const std::string& bytes) {
  make_dirs(dir);
  std::ofstream(join_path(dir, name), std::ios::binary | std::ios::trunc) << bytes;
}

void copy_file(const std::string& from, const std::string& dir, const std::string& name) {
  if (path_exists(from)) put(dir, name, read_file(from));
}

std::string gzip(const std::string& raw) {
  const std::string path = join_path(scratch(), "seed.gz");
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, raw.data(), static_cast<unsigned>(raw.size()));
  gzclose(f);
  return read_file(path);
}

std::string idx_bytes(int64_t n, int64_t h, int64_t w) {
  std::string b = {0, 0, 8, 3};
  for (int64_t d : {n, h, w})
    for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((d >> s) & 0xff);
  for (int64_t i = 0; i < n * h * w; ++i) b += static_cast<char>(i * 37);
  return b;
}

}  // namespace

void write_seeds(const std::string& dir) {
  torch::manual_seed(0);
  const std::string data_dir = RAR_FUZZ_TEST_DATA;
  // torch.save files: the fixtures of tests/data (zip ones) and their pickles
  for (const char* f : {"pt1x_nested.pt", "pt_proto4.pt", "evil_eval.pt", "missing_storage.pt", "short_storage.pt",
                        "view_out_of_range.pt", "not_state_dict.pt"}) {
    const std::string path = join_path(data_dir, f);
    if (!path_exists(path)) continue;
    copy_file(path, join_path(dir, "torch_zip"), f);
    io::ZipReader zip(path);
    for (const auto& n : zip.names())
      if (n.size() >= 8 && n.compare(n.size() - 8, 8, "data.pkl") == 0) put(join_path(dir, "pickle"), f, zip.read(n));
  }
  for (const char* f : {"legacy.pt", "pt_legacy.pt"}) copy_file(join_path(data_dir, f), join_path(dir, "torch_legacy"), f);

  io::StateDict sd;
  sd.set("blocks.0.attn.qkv.weight", torch::randn({4, 3}));
  sd.set("embeddings.weight", torch::randn({5, 2}).to(torch::kBFloat16));
  sd.set("ids", torch::arange(6, torch::kInt64).view({2, 3}));
  sd.set("mask", torch::tensor({true, false}));
  sd.metadata["rar.generator_config"] = "{\"hidden\": 4}";
  io::write_safetensors(join_path(scratch(), "s.safetensors"), sd);
  copy_file(join_path(scratch(), "s.safetensors"), join_path(dir, "safetensors"), "small.safetensors");

  put(join_path(dir, "npy"), "f32.npy", io::npy_encode(torch::randn({3, 4})));
  put(join_path(dir, "npy"), "i64.npy", io::npy_encode(torch::arange(10, torch::kInt64)));
  put(join_path(dir, "npy"), "bool.npy", io::npy_encode(torch::tensor({true, false, true})));
  io::write_npz(join_path(scratch(), "a.npz"), {{"images", torch::randint(0, 255, {2, 4, 4, 1}).to(torch::kUInt8)},
                                                {"labels", torch::tensor({int64_t(1), int64_t(0)})}});
  copy_file(join_path(scratch(), "a.npz"), join_path(dir, "npz"), "stored.npz");
  copy_file(join_path(data_dir, "pil_resize.npz"), join_path(dir, "npz"), "numpy.npz");
  io::write_npz(join_path(scratch(), "arr0.npz"), {{"arr_0", torch::randint(0, 256, {5, 4, 4, 3}).to(torch::kUInt8)}});
  copy_file(join_path(scratch(), "arr0.npz"), join_path(dir, "npz_rows"), "images.npz");
  put(join_path(dir, "jsonl_tokens"), "valid.jsonl",
      "{\"class_id\": 1, \"tokens\": [0, 1, 2, 15]}\n{\"class_id\": 3, \"tokens\": [4, 5, 6, 7]}\n"
      "{\"class_id\": 0, \"tokens\": [8, 9, 10, 11]}\n{\"class_id\": 2, \"tokens\": [12, 13, 14, 3]}\n");
  put(join_path(dir, "jsonl_tokens"), "bad.jsonl", "{\"class_id\": 1, \"tokens\": [0, 1, 2]}\n{\"tokens\": 5}\n");

  if (io::event_files_available()) {
    const std::string tb = join_path(scratch(), "seed_tb");
    remove_tree(tb);
    io::EventFileWriter w(tb, -1);
    for (int64_t step = 1; step <= 8; step += 3) w.scalars(step, {{"loss", 2.0 / step}, {"lr", 1e-4}});
    w.image(7, "samples", io::encode_png(torch::zeros({2, 2, 1}, torch::kUInt8)), 2, 2, 1);
    w.flush();
    copy_file(w.path(), join_path(dir, "event_file"), "run.tfevents");
  }
  auto grey = torch::randint(0, 255, {6, 5, 1}).to(torch::kUInt8), rgb = torch::randint(0, 255, {4, 7, 3}).to(torch::kUInt8);
  put(join_path(dir, "png"), "grey.png", io::encode_png(grey));
  put(join_path(dir, "png"), "rgb.png", io::encode_png(rgb));
  io::write_image(join_path(scratch(), "g.jpg"), grey);
  io::write_image(join_path(scratch(), "c.jpg"), torch::randint(0, 255, {17, 9, 3}).to(torch::kUInt8));
  copy_file(join_path(scratch(), "g.jpg"), join_path(dir, "jpeg"), "grey.jpg");
  copy_file(join_path(scratch(), "c.jpg"), join_path(dir, "jpeg"), "rgb.jpg");

  put(join_path(dir, "idx"), "images", idx_bytes(3, 4, 4));
  put(join_path(dir, "idx"), "labels", std::string({0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 0}));
  put(join_path(dir, "idx_gz"), "images.gz", gzip(idx_bytes(3, 4, 4)));

  data::write_token_file(join_path(scratch(), "t.rartok"), torch::randint(0, 16, {3, 4}), torch::tensor({0, 1, 2}), 16, 3);
  copy_file(join_path(scratch(), "t.rartok"), join_path(dir, "rartok"), "small.rartok");
  data::write_token_file(join_path(scratch(), "w.rartok"), torch::randint(0, 70000, {2, 3}), torch::tensor({0, 1}), 70000, 2);
  copy_file(join_path(scratch(), "w.rartok"), join_path(dir, "rartok"), "wide.rartok");

  const std::string cfg = read_file(join_path(RAR_FUZZ_SOURCE_DIR, "configs/rar/fashion-mnist.yaml"));
  put(join_path(dir, "config"), "fashion.yaml", cfg);
  put(join_path(dir, "config"), "overrides.yaml",
      std::string("training:\n  seed: 1_000\nx: &a [1, 2]\ny: *a\nz: ${training.seed}\n") + '\0' +
          "training.per_gpu_batch_size=4" + '\0' + "+extra.list=[1, 2.5e-3, .inf]");

  put(join_path(dir, "metrics"), "metrics.jsonl",
      "{\"step\": 1, \"loss\": 2.5, \"lr\": 1e-4}\n{\"step\": 2, \"loss\": 2.25, \"val/nll\": 2.0}\n");

  put(join_path(dir, "serve_request"), "class.json", R"({"class": 207, "n": 4, "cfg": 4.0, "seed": 1})");
  put(join_path(dir, "serve_request"), "classes.json",
      R"({"classes": [1, 2, 999], "n": 2, "cfg": 2.5, "cfg_power": 1.0, "cfg_schedule": "linear", "temperature": 0.9,
          "top_k": 40, "top_p": 0.95, "seed": 123456789})");
  put(join_path(dir, "serve_request"), "bad.json", R"({"class": 1e400, "n": -1, "x": [[[]]]})");
  put(join_path(dir, "serve_request"), "twice.json", R"({"class": 1, "n": 2, "class": 3, "seed": {"a": 1, "a": 2}})");
  put(join_path(dir, "serve_request"), "utf8.json", std::string("{\"class\": 1, \"cfg_schedule\": \"\xff\xfe\xc3\"}"));
  put(join_path(dir, "serve_request"), "huge.json", R"({"class": 1, "cfg": 1e39, "temperature": 1e-46, "top_p": 1e-300})");

  for (int i = 0; i < 4; ++i) {
    auto r = torch::randint(0, 256, {96}).to(torch::kUInt8);
    put(join_path(dir, "roundtrip"), "r" + std::to_string(i),
        std::string(static_cast<const char*>(r.data_ptr()), static_cast<size_t>(r.numel())));
  }
}

}  // namespace rar::fuzz
