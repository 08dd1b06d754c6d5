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

DecodeEngine::DecodeEngine(model::Generator g, EngineKind kind, std::optional<at::ScalarType> kv_dtype,
                           model::AttentionKernel attention)
    : g_(std::move(g)), kind_(kind), kv_dtype_(kv_dtype), attention_(attention) {}
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
  if (kind_ == EngineKind::Plain) {
    order_ = order;
    if (cache_.batch() != R) cache_ = g_->make_cache(R, S + 1, kv_dtype_);
    return;
  }
  // Captured steps and tables are valid for one scan order and one cache.
  if (order != order_ || cache_.batch() < R) {
    shape_ = nullptr;
    shapes_.clear();
    cache_ = {};
    cache_ = make_zeroed_cache(*g_, R, S + 1, kv_dtype_);
  }
  order_ = order;
  const auto class_rows = condition_.narrow(0, 0, R - null_rows);
  // A row count met before: the new batch's conditions and adaLN tables go into its tensors (its
  // graph reads them), unless the tables change shape (another count of distinct classes).
  auto it = shapes_.find(R);
  if (it != shapes_.end() && it->second.s.null_rows == null_rows && update_static_decode(*g_, it->second.s, class_rows)) {
    shape_ = &it->second;
    return;
  }
  // The first R rows of the cache (masked slots may hold an earlier batch's values: finite, and
  // weighted by exactly zero).
  Shape sh;
  for (size_t l = 0; l < cache_.k.size(); ++l) {
    sh.cache.k.push_back(cache_.k[l].narrow(0, 0, R));
    sh.cache.v.push_back(cache_.v[l].narrow(0, 0, R));
  }
  sh.s = make_static_decode(*g_, class_rows, null_rows, order_, S + 1);
  sh.s.attention = attention_;
  shape_ = &(shapes_[R] = std::move(sh));
}

torch::Tensor DecodeEngine::prefill() {
  torch::NoGradGuard no_grad;
  check(!order_.empty(), "engine: prefill before begin");
  return g_->decode_prefill(condition_, order_[0], kind_ == EngineKind::Plain ? cache_ : shape_->cache);
}

torch::Tensor DecodeEngine::step(const torch::Tensor& fed, int64_t t) {
  torch::NoGradGuard no_grad;
  check(t >= 1 && t < static_cast<int64_t>(order_.size()), "engine: step ", t, " out of range");
  if (kind_ == EngineKind::Plain) return g_->decode_step(fed, t, order_[t - 1], order_[t], condition_, cache_);
  auto& sh = *shape_;
  sh.s.token.copy_(fed);
  sh.s.step.fill_(t);
  if (kind_ == EngineKind::Static) return decode_step_static(*g_, sh.s, sh.cache);
  // graph: the static step captured at the first step of a row count, replayed after
  if (!sh.graph) sh.graph = std::make_unique<gpu::StepGraph>([this] { return decode_step_static(*g_, shape_->s, shape_->cache); });
  return sh.graph->replay();
}

}  // namespace rar::sampling
