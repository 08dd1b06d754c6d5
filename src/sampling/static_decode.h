// static_decode.h — the fast path of one decode step (the engine's "static" and "graph" kinds,
// sampling/engine): the same logits as Generator::decode_step, computed so that every step has
// the same shapes and tensor addresses (the step index is a device tensor written before each
// step), so one step can be captured in a CUDA graph and replayed. Beside the plain step it
// (a) attends over the whole preallocated cache with a mask (the fused kernel reads only the
//     filled slots), (b) gathers the adaLN products W·SiLU(c + E[j]) + b from tables made once per
// batch, and (c) carries each block's last residual add into the next block's first LayerNorm
// pass. The step and the speculative window share one block loop and one adaLN-row helper; they
// differ in their attention (the step's fused kernel over the filled slots, the window's masked
// attention). Tested against the plain step and the full forward (tests/test_generator.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "model/generator.h"
#include "model/ops/decode_ops.h"

namespace rar::sampling {

// What a static-shape decode step reads (make_static_decode, decode_step_static). Every step has
// the same shapes and tensor addresses — the step index is a device tensor written before each
// step — so one step can be captured in a CUDA graph and replayed (sampling/engine).
struct StaticDecode {
  torch::Tensor token;      // [R] int64: x[τ_t], fed at step t (written per step)
  torch::Tensor step;       // [1] int64: t >= 1 (written per step); the new position is cache slot t+1
  torch::Tensor condition;  // [R - null_rows] int64: condition token ids of the class rows
  torch::Tensor position;   // [S,H]: row t = P[2+τ_t] + T[2+τ_{t+1}] (row 0 unused)
  torch::Tensor slots;      // [capacity] int64: 0, 1, 2, ... (the attention mask compares them to t+1)
  int64_t null_rows = 0;    // the last null_rows rows are the null class (the guided batch's second half)
  // adaLN products W·SiLU(emb(c) + E[j]) + b depend only on a row's condition c and the position j,
  // and a batch has few distinct conditions (the null class for half of a guided batch; a class
  // per 50 images in the ADM protocol). They are computed once per batch for every distinct
  // condition and position — table[u*(S+2) + j], [U*(S+2), 6H] per block and [U*(S+2), 2H] for the
  // head — and a step gathers its rows. The last table_rows.size(0) rows use the tables; the first
  // R - that many (class rows, when all distinct classes would make the tables larger than the
  // budget) run the adaLN matmuls at every step.
  std::vector<torch::Tensor> table_block;
  torch::Tensor table_head;
  torch::Tensor table_rows;  // [rows served] int64: u*(S+2) of each served row's condition
  // Speculative windows (decode_window_static; undefined unless made with a window):
  torch::Tensor window;       // [R,W] int64: row r's x[τ_t] .. x[τ_{t+W-1}], t = window_step[r] (written per call)
  torch::Tensor window_step;  // [R] int64: each row's t, 1 .. S-1 (rows advance on their own; written per call)
  // The step's attention kernel on the fused path (the engine's options; a value, not process state).
  model::AttentionKernel attention = model::AttentionKernel::automatic;
};
// Static-shape decoding for R = condition.size(0) + null_rows rows along `order` (0-based scan
// order): the tables of StaticDecode, zeroed token/step buffers. The cache must be zeroed
// (masked slots are read: make_zeroed_cache) and hold S+1 slots; Generator::decode_prefill fills
// slots 0 and 1. The class rows' adaLN tables are made when they fit in `table_bytes` (else only
// the null class's).
// With window = W > 0 it also serves decode_window_static (the cache then needs S+W slots).
StaticDecode make_static_decode(model::GeneratorImpl& g, const torch::Tensor& condition, int64_t null_rows,
                                const std::vector<int64_t>& order, int64_t capacity,
                                int64_t table_bytes = int64_t(1) << 30, int64_t window = 0);
// A new batch with the same rows: rewrites s's tensors in place (a graph captured on them stays
// valid) when its tables keep their shapes; false when they would not (make a new one).
bool update_static_decode(model::GeneratorImpl& g, StaticDecode& s, const torch::Tensor& condition,
                          int64_t table_bytes = int64_t(1) << 30);
// A KV cache whose every slot is zero (Generator::make_cache leaves them unset).
model::KVCache make_zeroed_cache(const model::GeneratorImpl& g, int64_t batch, int64_t capacity,
                                 std::optional<at::ScalarType> dtype = std::nullopt);
// Step t = s.step (1..S-1): the same logits as decode_step(s.token, t, τ_t, τ_{t+1}, ...) [R,V] float32.
torch::Tensor decode_step_static(model::GeneratorImpl& g, const StaticDecode& s, model::KVCache& cache);
// Steps t .. t+W-1 at once, t = s.window_step[r] for row r (speculative decoding,
// sampling/speculative: each row at its own step), with the same shapes at every call: feeds
// s.window, writes row r's cache slots t+1 .. t+W, attends with a mask (new position j sees slots
// 0 .. t+1+j). Logits [R,W,V] float32, column j as Generator::decode_window's;
// columns past the last step (t+j > S-1) are computed on clamped positions and mean nothing. The
// step's block (residual adds fused into the next LayerNorm) with a window's attention.
torch::Tensor decode_window_static(model::GeneratorImpl& g, const StaticDecode& s, model::KVCache& cache);

}  // namespace rar::sampling
