// orders.h — scan orders over a token grid (the paper's ablation, DESIGN §4): the order τ in which
// the S = rows x cols tokens are generated. Shared by sampling and training.
//   raster      row by row, left to right (what the published models use)
//   spiral-in   clockwise from the top-left corner along the border, inwards to the centre
//   spiral-out  spiral-in reversed: from the centre outwards
//   z-curve     Morton order: row and column bits interleaved (row bit above column bit)
//   subsample   the four stride-2 sub-grids one after another: (even,even), (even,odd), (odd,even),
//               (odd,odd), each in raster order
//   alternate   boustrophedon: even rows left to right, odd rows right to left
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace rar::sampling {

const std::vector<std::string>& order_names();
// τ as token indices (row * cols + col), a permutation of 0..rows*cols-1.
std::vector<int64_t> scan_order(const std::string& name, int64_t rows, int64_t cols);
// For a square grid of S tokens (S must be a perfect square).
std::vector<int64_t> scan_order(const std::string& name, int64_t seq_len);
torch::Tensor order_tensor(const std::vector<int64_t>& order);

}  // namespace rar::sampling
