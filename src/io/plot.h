// plot.h — line charts as PNG (cairo): a grid of panels, each with one or more named series over
// a shared x axis (training step), axes with tick labels, and a legend. For `rar plot`.
#pragma once
#include <string>
#include <vector>

#include <torch/types.h>

namespace rar::io {

struct Series {
  std::string name;
  std::vector<double> x, y;
};

struct Panel {
  std::string title;
  std::vector<Series> series;
  bool log_y = false;
};

// Writes the panels in a grid of `columns` columns (atomically). Throws rar::Error when this
// build has no cairo or the file cannot be written.
void write_plot_png(const std::string& path, const std::vector<Panel>& panels, int columns = 2);
bool plotting_available();

// An image grid (uint8 [H,W,C], C = 1 or 3) with one text label per row of tiles in a left margin,
// written as PNG (atomically). Without cairo the grid is written unlabelled.
void write_labelled_rows_png(const std::string& path, const torch::Tensor& grid, const std::vector<std::string>& labels);

}  // namespace rar::io
