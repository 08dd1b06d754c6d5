// engine.h — the model side of generation (DESIGN §5): step 0 (prefill) and step t of the
// KV-cache loop, behind one interface with three implementations:
//   plain:  Generator::decode_prefill / decode_step, the cache grown step by step (the reference);
//   static: every step with the same shapes and addresses (sampling/static_decode: the step
//           index in a device tensor, attention over the whole cache with a mask, the null class's
//           adaLN products from a table computed once);
//   graph:  the static step captured once in a CUDA graph and replayed at every step (CUDA builds,
//           CUDA devices): one launch per step instead of several hundred.
// The sampler (sampling/sampler) runs the loop and the logits chain the same way for all three.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/generator.h"
#include "sampling/static_decode.h"
#include "util/gpu.h"

namespace rar::sampling {

enum class EngineKind { Plain, Static, Graph };

// "plain" | "static" | "graph" | "auto" (graph on a CUDA device in a CUDA build, else plain).
EngineKind parse_engine(const std::string& name, const torch::Device& device);
// Throws rar::Error unless `name` is one of those four (no device needed yet).
void check_engine_name(const std::string& name);
// --kv-cache: "model" (nullopt: the model's dtype) or "fp8" (e4m3); throws rar::Error otherwise.
std::optional<at::ScalarType> parse_kv_cache(const std::string& name);
const char* engine_name(EngineKind k);

// The static-shape buffers of every row count a sampler meets, one owner for its sequential and
// its speculative strategy: one KV cache of S + W slots (W: the speculative window, 0 without)
// over the largest row count met — a batch of R rows uses its first R rows; masked slots may hold
// an earlier batch's values, finite and weighted by exactly zero — and per row count the step's
// inputs and adaLN tables (StaticDecode) and the graphs captured on them, by name. A batch of a
// row count met before rewrites its conditions and tables in place, so the graphs stay valid,
// unless the tables change shape (another count of distinct classes): then that row count's
// buffers are made anew and its graphs dropped. Another scan order, or more rows than the cache
// holds, starts over.
class StaticBuffers {
 public:
  struct Rows {
    model::KVCache cache;  // the first R rows of the shared cache
    StaticDecode s;
    std::map<std::string, std::unique_ptr<gpu::StepGraph>> graphs;  // captured on this row count's buffers
  };
  // kv_dtype: the KV cache's dtype (nullopt = the model's; fp8 e4m3 halves what each step reads);
  // attention: the static step's attention kernel on CUDA.
  StaticBuffers(model::Generator g, int64_t window, std::optional<at::ScalarType> kv_dtype,
                model::AttentionKernel attention);
  ~StaticBuffers();
  // The buffers of a batch: its class rows' condition tokens, then null_rows rows of the null class.
  Rows& begin(const torch::Tensor& class_rows, int64_t null_rows, const std::vector<int64_t>& order);
  int64_t window() const { return window_; }

 private:
  model::Generator g_;
  int64_t window_;
  std::optional<at::ScalarType> kv_dtype_;
  model::AttentionKernel attention_;
  std::vector<int64_t> order_;
  model::KVCache cache_;
  std::map<int64_t, Rows> rows_;  // by row count
};

class DecodeEngine {
 public:
  // The static and graph kinds keep their buffers in `buffers` (shared with a speculative
  // strategy; made here with the options when null); the plain kind grows its own cache.
  DecodeEngine(model::Generator g, EngineKind kind, std::optional<at::ScalarType> kv_dtype = std::nullopt,
               model::AttentionKernel attention = model::AttentionKernel::automatic,
               std::shared_ptr<StaticBuffers> buffers = nullptr);
  ~DecodeEngine();
  DecodeEngine(DecodeEngine&&) noexcept;
  DecodeEngine& operator=(DecodeEngine&&) noexcept;

  // A new batch: condition token ids [R] (the class rows, then null_rows rows of the null class
  // when guided) and the scan order (0-based positions). Static and graph kinds take the row
  // count's StaticBuffers (a service's batches come in a few sizes: each step is captured once);
  // the plain kind keeps its cache while R stays the same.
  void begin(const torch::Tensor& condition, int64_t null_rows, const std::vector<int64_t>& order);
  torch::Tensor prefill();                                  // step 0: logits [R,V] float32
  torch::Tensor step(const torch::Tensor& fed, int64_t t);  // step t >= 1, fed = x[τ_t] [R] (sampled at step t-1)

  EngineKind kind() const { return kind_; }

 private:
  model::Generator g_;
  EngineKind kind_;
  std::optional<at::ScalarType> kv_dtype_;
  torch::Tensor condition_;
  std::vector<int64_t> order_;
  model::KVCache cache_;                    // plain: this batch's cache
  std::shared_ptr<StaticBuffers> buffers_;  // static/graph
  StaticBuffers::Rows* rows_ = nullptr;     // this batch's
};

}  // namespace rar::sampling
