// recompute.cpp — see recompute.h.
#include "model/recompute.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include "util/autocast.h"

namespace rar::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

at::Generator default_generator(const torch::Device& d) { return at::globalContext().defaultGenerator(d); }

struct RngSnapshot {
  torch::Tensor cpu, dev;
  torch::Device device = torch::kCPU;
  static RngSnapshot take(const torch::Device& device) {
    RngSnapshot s;
    s.device = device;
    s.cpu = default_generator(torch::kCPU).get_state();
    if (device.is_cuda()) s.dev = default_generator(device).get_state();
    return s;
  }
  void restore() const {
    auto g = default_generator(torch::kCPU);
    g.set_state(cpu);
    if (dev.defined()) {
      auto d = default_generator(device);
      d.set_state(dev);
    }
  }
};

struct BlockRecompute : torch::autograd::Function<BlockRecompute> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor silu_c, BlockImpl* block) {
    const auto dev = x.device();
    auto rng = RngSnapshot::take(dev);
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);
    ctx->saved_data["rng_cpu"] = rng.cpu;
    if (rng.dev.defined()) ctx->saved_data["rng_dev"] = rng.dev;
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(dev.type());
    ctx->saved_data["autocast_dtype"] = static_cast<int64_t>(at::autocast::get_autocast_dtype(dev.type()));
    ctx->save_for_backward({x, silu_c});
    return block->forward(x, silu_c);  // grad mode is off inside a custom Function's forward
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_out) {
    auto saved = ctx->get_saved_variables();
    auto x = saved[0].detach().requires_grad_(saved[0].requires_grad());
    auto c = saved[1].detach().requires_grad_(saved[1].requires_grad());
    auto* block = reinterpret_cast<BlockImpl*>(ctx->saved_data["block"].toInt());
    const auto dev = x.device();
    RngSnapshot then;
    then.device = dev;
    then.cpu = ctx->saved_data["rng_cpu"].toTensor();
    if (ctx->saved_data.count("rng_dev")) then.dev = ctx->saved_data["rng_dev"].toTensor();
    const bool autocast = ctx->saved_data["autocast"].toBool();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["autocast_dtype"].toInt());

    auto now = RngSnapshot::take(dev);
    then.restore();
    torch::Tensor y;
    {
      torch::AutoGradMode grad(true);
      Autocast ac(autocast, dev.type(), dtype);  // the forward's autocast state, whatever this thread's is
      y = block->forward(x, c);
    }
    now.restore();
    std::vector<torch::Tensor> inputs;
    if (x.requires_grad()) inputs.push_back(x);
    if (c.requires_grad()) inputs.push_back(c);
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.requires_grad() ? x.grad() : torch::Tensor(), c.requires_grad() ? c.grad() : torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor recomputed_block(Block& block, const torch::Tensor& x, const torch::Tensor& silu_c) {
  return BlockRecompute::apply(x, silu_c, block.get());
}

}  // namespace rar::model
