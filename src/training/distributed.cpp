// distributed.cpp — see distributed.h.
#include "training/distributed.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "util/device.h"
#include "util/error.h"

#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef RAR_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef RAR_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace rar::training {

namespace {
int64_t env_int(const char* name, int64_t def) {
  const char* v = std::getenv(name);
  if (!v || !*v) return def;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  check(end && *end == '\0', "environment variable ", name, "='", v, "' is not an integer");
  return x;
}
}  // namespace

torch::Device rank_device(torch::Device device, const DistEnv& env) {
  if (!device.is_cuda()) return device;
  if (env.world > 1) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  use_device(device);
  return device;
}

DistEnv dist_env_from_environment() {
  DistEnv e;
  e.world = env_int("WORLD_SIZE", 1);
  e.rank = env_int("RANK", 0);
  e.local_rank = env_int("LOCAL_RANK", e.rank);
  e.local_world = env_int("LOCAL_WORLD_SIZE", e.world);
  e.node = env_int("GROUP_RANK", 0);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500);
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  e.agent_store = agent && std::string(agent) == "True";
  e.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", 0);
  check(e.world >= 1, "WORLD_SIZE must be >= 1, got ", e.world);
  check(e.rank >= 0 && e.rank < e.world, "RANK ", e.rank, " is outside WORLD_SIZE ", e.world);
  check(e.local_world >= 1 && e.local_world <= e.world, "LOCAL_WORLD_SIZE ", e.local_world,
        " must be between 1 and WORLD_SIZE ", e.world);
  check(e.local_rank >= 0 && (e.local_rank < e.local_world || !std::getenv("LOCAL_WORLD_SIZE")), "LOCAL_RANK ",
        e.local_rank, " is outside LOCAL_WORLD_SIZE ", e.local_world);
  check(e.node >= 0, "GROUP_RANK must be >= 0, got ", e.node);
  check(e.master_port > 0 && e.master_port < 65536, "MASTER_PORT ", e.master_port, " is not a port number");
  return e;
}

struct DataParallel::Impl {
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
#endif
  std::string name;

  // Overlapped gradient averaging.
  struct Bucket {
    std::vector<torch::Tensor> params;
    int64_t pending = 0;
    bool launched = false;
    std::vector<at::Tensor> flat;
    at::Tensor parts;  // ordered: the [world, shard] parts of this rank's shard, from every rank
    int64_t numel = 0;
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
    c10::intrusive_ptr<c10d::Work> work;
#endif
  };
  std::vector<Bucket> buckets;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // kept alive: hooks live on them
  std::mutex mutex;
  bool armed = false;
  torch::ScalarType comm_dtype = torch::kFloat32;  // what the gradients travel as
  bool ordered = false;  // sum the ranks' gradients in rank order (see DataParallel's constructor)
  int64_t world = 1;

  void launch(Bucket& b) {
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
    torch::NoGradGuard ng;
    std::vector<torch::Tensor> views;
    for (auto& p : b.params) {
      auto g = p.grad();
      views.push_back(g.defined() ? g.reshape({-1}) : torch::zeros({p.numel()}, p.options()));
    }
    auto flat = torch::cat(views);
    if (flat.is_floating_point() && flat.scalar_type() != comm_dtype) flat = flat.to(comm_dtype);
    b.numel = flat.numel();
    if (ordered) {
      // rank r's shard of every rank's gradients to rank r (the first half of an all-reduce)
      const int64_t shard = (b.numel + world - 1) / world;
      if (shard * world != b.numel) flat = torch::cat({flat, torch::zeros({shard * world - b.numel}, flat.options())});
      b.flat = {flat};
      b.parts = torch::empty({world, shard}, flat.options());
      std::vector<int64_t> equal;  // empty split sizes: equal parts
      b.work = pg->alltoall_base(b.parts, b.flat[0], equal, equal);
    } else {
      b.flat = {flat};
      b.work = pg->allreduce(b.flat);
    }
    b.launched = true;
#endif
  }
};

namespace {
struct BucketReadyHook : torch::autograd::FunctionPostHook {
  BucketReadyHook(DataParallel::Impl* impl, size_t bucket) : impl_(impl), bucket_(bucket) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (!impl_->armed) return outputs;
    auto& b = impl_->buckets[bucket_];
    if (--b.pending == 0 && !b.launched) impl_->launch(b);
    return outputs;
  }
  DataParallel::Impl* impl_;
  size_t bucket_;
};
}  // namespace

DataParallel::DataParallel(const DistEnv& env, const torch::Device& device, double bucket_mb, torch::ScalarType comm_dtype,
                           bool exact)
    : env_(env), device_(device), bucket_bytes_(static_cast<int64_t>(bucket_mb * (1 << 20))), impl_(std::make_unique<Impl>()) {
  impl_->comm_dtype = comm_dtype;
  impl_->world = env_.world;
  // Two ranks' all-reduce is a + b whatever its algorithm; from three on a ring sums each chunk in
  // another order, so `exact` sums in rank order instead.
  impl_->ordered = exact && env_.world > 2;
  if (env_.world == 1) {
    impl_->name = "none";
    return;
  }
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env_.master_port);
  so.isServer = env_.rank == 0 && !env_.agent_store;
  so.numWorkers = static_cast<size_t>(env_.world);
  so.waitWorkers = false;
  so.timeout = std::chrono::minutes(5);
  c10::intrusive_ptr<c10d::Store> tcp = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, so);
  impl_->store = c10::make_intrusive<c10d::PrefixStore>(
      "/rar/attempt_" + std::to_string(env_.restart_count) + "/", tcp);
  if (device.is_cuda()) {
#ifdef RAR_WITH_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, env_.rank, env_.world, opts);
    impl_->name = "nccl";
#else
    fail("data parallel on CUDA needs NCCL: this build has none (rebuild with NCCL headers available)");
#endif
  } else {
#ifdef RAR_WITH_GLOO
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->timeout = std::chrono::minutes(5);
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env_.rank, env_.world, opts);
    impl_->name = "gloo";
#else
    fail("data parallel on CPU needs gloo: this build has none (install libgloo-dev and rebuild)");
#endif
  }
#else
  fail("WORLD_SIZE=", env_.world, " but this build has no c10d backend (gloo/NCCL)");
#endif
}

DataParallel::~DataParallel() {
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  // A normal exit: every rank arrives, then the communicators are taken down together (a rank that
  // exits while another still polls its last collective makes NCCL report a system error there).
  if (!impl_->pg) return;
  try {
    if (std::uncaught_exceptions() > 0) {  // leaving on an error: the other ranks may never arrive
      impl_->pg->abort();
      return;
    }
    barrier();
    impl_->pg->shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %lld: process group shutdown: %s\n", (long long)env_.rank, e.what());
  }
#endif
}

const char* DataParallel::backend() const { return impl_->name.c_str(); }

void DataParallel::broadcast(const std::vector<torch::Tensor>& tensors) {
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  if (!impl_->pg) return;
  torch::NoGradGuard ng;
  for (const auto& t : tensors) {
    std::vector<at::Tensor> v = {t.detach()};
    impl_->pg->broadcast(v)->wait();
  }
#endif
}

void DataParallel::attach(const std::vector<torch::Tensor>& params) {
  if (env_.world == 1) return;
  auto& im = *impl_;
  int64_t bytes = bucket_bytes_;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {  // gradients arrive roughly in reverse
    const auto& p = *it;
    if (!p.requires_grad()) continue;
    const int64_t nb = p.numel() * p.element_size();
    if (im.buckets.empty() || bytes + nb > bucket_bytes_ ||
        im.buckets.back().params.front().scalar_type() != p.scalar_type()) {
      im.buckets.emplace_back();
      bytes = 0;
    }
    im.buckets.back().params.push_back(p);
    bytes += nb;
    auto acc = torch::autograd::impl::grad_accumulator(p);
    acc->add_post_hook(std::make_unique<BucketReadyHook>(&im, im.buckets.size() - 1));
    im.accumulators.push_back(acc);
  }
}

void DataParallel::arm() {
  if (env_.world == 1) return;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (auto& b : impl_->buckets) {
    b.pending = static_cast<int64_t>(b.params.size());
    b.launched = false;
  }
  impl_->armed = true;
}

void DataParallel::finish() {
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  if (env_.world == 1) return;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->armed = false;
  torch::NoGradGuard ng;
  last_overlapped_ = 0;
  for (auto& b : impl_->buckets) {
    if (b.launched) ++last_overlapped_;
    else impl_->launch(b);  // parameters without a gradient this step
  }
  if (impl_->ordered) {
    // the second half: each rank adds its shard's parts in rank order — ((g0 + g1) + g2) + ..., the
    // order in which one process accumulating the micro-batches adds them — and every rank
    // gathers the summed shards
    for (auto& b : impl_->buckets) {
      b.work->wait();
      auto sum = b.parts[0].clone();
      for (int64_t r = 1; r < env_.world; ++r) sum.add_(b.parts[r]);
      b.flat = {torch::empty({b.parts.numel()}, sum.options())};
      b.parts = sum;
      b.work = impl_->pg->_allgather_base(b.flat[0], b.parts);
    }
  }
  for (auto& b : impl_->buckets) {
    b.work->wait();
    auto flat = b.flat[0].narrow(0, 0, b.numel).to(b.params.front().scalar_type()).div_(static_cast<double>(env_.world));
    int64_t off = 0;
    for (auto& p : b.params) {
      auto part = flat.narrow(0, off, p.numel()).view_as(p);
      if (p.grad().defined()) p.mutable_grad().copy_(part);
      else p.mutable_grad() = part.clone();
      off += p.numel();
    }
    b.flat.clear();
    b.parts = at::Tensor();
    b.work.reset();
  }
#endif
}

int64_t DataParallel::buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }

#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
namespace {
// t reduced across the ranks with `op`, in place (a view goes through a contiguous copy).
void all_reduce_(c10d::Backend& pg, torch::Tensor& t, c10d::ReduceOp::RedOpType op) {
  std::vector<at::Tensor> v = {t.contiguous()};
  c10d::AllreduceOptions o;
  o.reduceOp = op;
  pg.allreduce(v, o)->wait();
  if (!v[0].is_same(t)) t.copy_(v[0]);
}
}  // namespace
#endif

void DataParallel::sum_(torch::Tensor& t) {
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  if (impl_->pg) all_reduce_(*impl_->pg, t, c10d::ReduceOp::SUM);
#endif
}

void DataParallel::max_(torch::Tensor& t) {
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  if (impl_->pg) all_reduce_(*impl_->pg, t, c10d::ReduceOp::MAX);
#endif
}

torch::Tensor DataParallel::all_gather(const torch::Tensor& t) {
  if (env_.world == 1) return t.unsqueeze(0).clone();
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  // the collective runs on this process's device (NCCL takes CUDA tensors only)
  auto mine = t.to(device_).contiguous();
  std::vector<at::Tensor> in = {mine};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int64_t r = 0; r < env_.world; ++r) out[0].push_back(torch::empty_like(mine));
  impl_->pg->allgather(out, in)->wait();
  return torch::stack(out[0]).to(t.device());
#else
  fail("all_gather: this build has no c10d backend");
#endif
}

torch::Tensor DataParallel::from_main(const torch::Tensor& t) {
  if (env_.world == 1) return t;
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  std::vector<at::Tensor> v = {t.to(device_).contiguous().clone()};
  impl_->pg->broadcast(v)->wait();
  return v[0].to(t.device());
#else
  fail("from_main: this build has no c10d backend");
#endif
}

std::string DataParallel::from_main(const std::string& s) {
  if (env_.world == 1) return s;
  const auto n = from_main(torch::tensor({static_cast<int64_t>(s.size())}, torch::kInt64)).item<int64_t>();
  if (n == 0) return std::string();  // (an empty tensor's data pointer is null: no memcpy from it)
  auto bytes = torch::zeros({n}, torch::kUInt8);
  if (is_main()) std::memcpy(bytes.data_ptr<uint8_t>(), s.data(), static_cast<size_t>(n));
  bytes = from_main(bytes);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(n));
}

bool DataParallel::all_ok(bool ok) {
  if (env_.world == 1) return ok;
  auto bad = torch::full({1}, ok ? 0.0f : 1.0f, torch::TensorOptions().device(device_));
  sum_(bad);
  return bad.item<float>() == 0.0f;
}

void DataParallel::barrier() {
#if defined(RAR_WITH_GLOO) || defined(RAR_WITH_NCCL)
  if (!impl_->pg) return;
  auto t = torch::zeros({1}, torch::TensorOptions().device(device_));
  sum_(t);
  // NCCL's wait() only orders the current stream after the collective: reading the result back is
  // what holds this process until every rank has arrived
  (void)t.item<float>();
#endif
}

}  // namespace rar::training
