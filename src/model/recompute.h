// recompute.h — recomputed activations of a transformer block (what PyTorch calls activation
// checkpointing; training with `use_checkpoint`): the forward runs without recording autograd
// history and keeps only the block's inputs; the backward re-runs the block with the RNG states (dropout) and autocast mode of the original
// forward, then back-propagates through the recomputed graph. Gradients are identical to the
// plain path (tested); memory drops to one [B,N,H] tensor per block.
#pragma once
#include <torch/torch.h>

#include "model/generator.h"

namespace rar::model {

torch::Tensor recomputed_block(Block& block, const torch::Tensor& x, const torch::Tensor& silu_c);

}  // namespace rar::model
