// engine.cpp — see engine.h.
#include "sampling/engine.h"

#include "sampling/static_decode.h"

#include "util/error.h"
#include "util/gpu.h"


namespace rar::sampling {

void check_engine_name(const std::string& name) {
  check(name == "plain" || name == "static" || name == "graph" || name == "auto",
        "--engine must be plain, static, graph or auto, got '", name, "'");
}

std::optional<at::ScalarType> parse_kv_cache(const std::string& name) {
  check(name == "model" || name == "fp8", "--kv-cache must be model or fp8, got '", name, "'");
  if (name == "fp8") return torch::kFloat8_e4m3fn;
  return std::nullopt;
}

EngineKind parse_engine(const std::string& name, const torch::Device& device) {
  check_engine_name(name);
  if (name == "plain") return EngineKind::Plain;
  if (name == "static") return EngineKind::Static;
  if (gpu::built() && device.is_cuda()) return EngineKind::Graph;
  check(name == "auto", "--engine graph needs a CUDA device and a CUDA build (-DRAR_CUDA=ON)");
  return EngineKind::Plain;
}

const char* engine_name(EngineKind k) {
  switch (k) {
    case EngineKind::Plain: return "plain";
    case EngineKind::Static: return "static";
    case EngineKind::Graph: return "graph";
  }
  return "?";
}

StaticBuffers::StaticBuffers(model::Generator g, int64_t window, std::optional<at::ScalarType> kv_dtype,
                             model::AttentionKernel attention)
    : g_(std::move(g)), window_(window), kv_dtype_(kv_dtype), attention_(attention) {}
StaticBuffers::~StaticBuffers() = default;

StaticBuffers::Rows& StaticBuffers::begin(const torch::Tensor& class_rows, int64_t null_rows,
                                          const std::vector<int64_t>& order) {
  torch::NoGradGuard no_grad;
  const int64_t R = class_rows.size(0) + null_rows, S = g_->cfg.seq_len;
  const int64_t capacity = S + std::max<int64_t>(window_, 1);  // a step needs S + 1 slots, a window S + W
  // Captured steps and tables are valid for one scan order and one cache.
  if (order != order_ || cache_.batch() < R) {
    rows_.clear();
    cache_ = {};
    cache_ = make_zeroed_cache(*g_, R, capacity, kv_dtype_);
    order_ = order;
  }
  auto it = rows_.find(R);
  if (it != rows_.end() && it->second.s.null_rows == null_rows && update_static_decode(*g_, it->second.s, class_rows))
    return it->second;
  Rows r;
  for (size_t l = 0; l < cache_.k.size(); ++l) {
    r.cache.k.push_back(cache_.k[l].narrow(0, 0, R));
    r.cache.v.push_back(cache_.v[l].narrow(0, 0, R));
  }
  r.s = make_static_decode(*g_, class_rows, null_rows, order_, capacity, int64_t(1) << 30, window_);
  r.s.attention = attention_;
  return rows_[R] = std::move(r);  // graphs captured on the old buffers are dropped with them
}

DecodeEngine::DecodeEngine(model::Generator g, EngineKind kind, std::optional<at::ScalarType> kv_dtype,
                           model::AttentionKernel attention, std::shared_ptr<StaticBuffers> buffers)
    : g_(std::move(g)), kind_(kind), kv_dtype_(kv_dtype), buffers_(std::move(buffers)) {
  if (kind_ != EngineKind::Plain && !buffers_) buffers_ = std::make_shared<StaticBuffers>(g_, 0, kv_dtype_, attention);
}
DecodeEngine::~DecodeEngine() = default;
DecodeEngine::DecodeEngine(DecodeEngine&&) noexcept = default;
DecodeEngine& DecodeEngine::operator=(DecodeEngine&&) noexcept = default;

void DecodeEngine::begin(const torch::Tensor& condition, int64_t null_rows, const std::vector<int64_t>& order) {
  torch::NoGradGuard no_grad;
  const int64_t R = condition.size(0), S = g_->cfg.seq_len;
  const auto device = g_->cls_token.device();
  check(static_cast<int64_t>(order.size()) == S, "engine: order has ", order.size(), " positions, want ", S);
  check(null_rows >= 0 && null_rows <= R, "engine: null_rows ", null_rows, " of ", R);
  condition_ = condition.to(device, torch::kInt64);
  order_ = order;
  if (kind_ == EngineKind::Plain) {
    if (cache_.batch() != R) cache_ = g_->make_cache(R, S + 1, kv_dtype_);
    return;
  }
  rows_ = &buffers_->begin(condition_.narrow(0, 0, R - null_rows), null_rows, order_);
}

torch::Tensor DecodeEngine::prefill() {
  torch::NoGradGuard no_grad;
  check(!order_.empty(), "engine: prefill before begin");
  return g_->decode_prefill(condition_, order_[0], kind_ == EngineKind::Plain ? cache_ : rows_->cache);
}

torch::Tensor DecodeEngine::step(const torch::Tensor& fed, int64_t t) {
  torch::NoGradGuard no_grad;
  check(t >= 1 && t < static_cast<int64_t>(order_.size()), "engine: step ", t, " out of range");
  if (kind_ == EngineKind::Plain) return g_->decode_step(fed, t, order_[t - 1], order_[t], condition_, cache_);
  auto& r = *rows_;
  r.s.token.copy_(fed);
  r.s.step.fill_(t);
  if (kind_ == EngineKind::Static) return decode_step_static(*g_, r.s, r.cache);
  // graph: the static step captured at the first step of a row count, replayed after
  auto& graph = r.graphs["step"];
  if (!graph) graph = std::make_unique<gpu::StepGraph>([this] { return decode_step_static(*g_, rows_->s, rows_->cache); });
  return graph->replay();
}

}  // namespace rar::sampling
