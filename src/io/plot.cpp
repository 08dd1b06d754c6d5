// plot.cpp — see plot.h. Drawing goes through cairo (Debian libcairo2-dev); without it the build
// still works and `rar plot` says it is unavailable.
#include "io/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "io/image.h"
#include "util/atomic_file.h"
#include "util/error.h"

#ifdef RAR_WITH_CAIRO
#include <cairo.h>
#endif

namespace rar::io {

bool plotting_available() {
#ifdef RAR_WITH_CAIRO
  return true;
#else
  return false;
#endif
}

#ifdef RAR_WITH_CAIRO
namespace {

const double kColors[][3] = {{0.12, 0.47, 0.71}, {1.0, 0.5, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16},
                             {0.58, 0.4, 0.74},  {0.55, 0.34, 0.29}};

std::string tick_label(double v) {
  char buf[32];
  const double a = std::fabs(v);
  if (a != 0 && (a >= 1e5 || a < 1e-2)) std::snprintf(buf, sizeof buf, "%.1e", v);
  else if (a >= 100 || v == std::round(v)) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// About n "nice" tick values covering [lo, hi].
std::vector<double> ticks(double lo, double hi, int n) {
  std::vector<double> out;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / n, mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    out.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);  // no "-0"
  return out;
}

void draw_panel(cairo_t* cr, const Panel& p, double x0, double y0, double w, double h) {
  const double left = 70, right = 15, top = 30, bottom = 40;
  const double px = x0 + left, py = y0 + top, pw = w - left - right, ph = h - top - bottom;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  auto ty = [&](double v) { return p.log_y ? std::log10(std::max(v, 1e-300)) : v; };
  for (const auto& s : p.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, ty(s.y[i]));
      ymax = std::max(ymax, ty(s.y[i]));
    }
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
  cairo_set_font_size(cr, 14);
  cairo_move_to(cr, px, y0 + 20);
  cairo_show_text(cr, p.title.c_str());
  if (!std::isfinite(xmin)) return;
  if (xmax == xmin) xmax = xmin + 1;
  if (ymax == ymin) ymax = ymin + (ymin == 0 ? 1 : std::fabs(ymin) * 0.1);
  const double pad = (ymax - ymin) * 0.05;
  ymin -= pad;
  ymax += pad;
  auto X = [&](double v) { return px + (v - xmin) / (xmax - xmin) * pw; };
  auto Y = [&](double v) { return py + ph - (ty(v) - ymin) / (ymax - ymin) * ph; };
  auto Yt = [&](double t) { return py + ph - (t - ymin) / (ymax - ymin) * ph; };
  // Axes, grid and tick labels.
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, 11);
  cairo_set_line_width(cr, 1);
  for (double t : ticks(ymin, ymax, 5)) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, px, Yt(t));
    cairo_line_to(cr, px + pw, Yt(t));
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    const std::string label = tick_label(p.log_y ? std::pow(10, t) : t);
    cairo_text_extents_t e;
    cairo_text_extents(cr, label.c_str(), &e);
    cairo_move_to(cr, px - e.width - 6, Yt(t) + e.height / 2);
    cairo_show_text(cr, label.c_str());
  }
  for (double t : ticks(xmin, xmax, 5)) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, X(t), py);
    cairo_line_to(cr, X(t), py + ph);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    const std::string label = tick_label(t);
    cairo_text_extents_t e;
    cairo_text_extents(cr, label.c_str(), &e);
    cairo_move_to(cr, X(t) - e.width / 2, py + ph + 16);
    cairo_show_text(cr, label.c_str());
  }
  cairo_move_to(cr, px + pw / 2 - 12, py + ph + 32);
  cairo_show_text(cr, "step");
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_rectangle(cr, px, py, pw, ph);
  cairo_stroke(cr);
  // Series and legend.
  cairo_save(cr);
  cairo_rectangle(cr, px, py, pw, ph);
  cairo_clip(cr);
  cairo_set_line_width(cr, 1.5);
  for (size_t k = 0; k < p.series.size(); ++k) {
    const auto& s = p.series[k];
    const auto* c = kColors[k % 6];
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    bool pen = false;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) {
        pen = false;
        continue;
      }
      if (pen) cairo_line_to(cr, X(s.x[i]), Y(s.y[i]));
      else cairo_move_to(cr, X(s.x[i]), Y(s.y[i]));
      pen = true;
    }
    cairo_stroke(cr);
    if (s.x.size() == 1) {  // a single point: draw a dot
      cairo_arc(cr, X(s.x[0]), Y(s.y[0]), 3, 0, 2 * M_PI);
      cairo_fill(cr);
    }
  }
  cairo_restore(cr);
  for (size_t k = 0; k < p.series.size() && p.series.size() > 1; ++k) {
    const auto* c = kColors[k % 6];
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    cairo_rectangle(cr, px + pw - 150, py + 8 + 16 * k, 12, 3);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_move_to(cr, px + pw - 132, py + 14 + 16 * k);
    cairo_show_text(cr, p.series[k].name.c_str());
  }
}

cairo_status_t append_png(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

}  // namespace
#endif

void write_plot_png(const std::string& path, const std::vector<Panel>& panels, int columns) {
#ifdef RAR_WITH_CAIRO
  check(!panels.empty(), "plot: nothing to draw");
  const int cols = std::max(1, std::min<int>(columns, static_cast<int>(panels.size())));
  const int rows = (static_cast<int>(panels.size()) + cols - 1) / cols;
  const int pw = 520, ph = 300;
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, cols * pw, rows * ph);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  for (size_t i = 0; i < panels.size(); ++i)
    draw_panel(cr, panels[i], static_cast<double>(i % cols) * pw, static_cast<double>(i / cols) * ph, pw, ph);
  cairo_destroy(cr);
  std::string png;
  const auto st = cairo_surface_write_to_png_stream(surface, append_png, &png);
  cairo_surface_destroy(surface);
  check(st == CAIRO_STATUS_SUCCESS, path, ": PNG encoding failed (", cairo_status_to_string(st), ")");
  write_file_atomic(path, png);
#else
  fail("plot: this build has no cairo (install libcairo2-dev and rebuild) — cannot write ", path);
#endif
}

void write_labelled_rows_png(const std::string& path, const torch::Tensor& grid, const std::vector<std::string>& labels) {
#ifdef RAR_WITH_CAIRO
  check(grid.dim() == 3 && grid.scalar_type() == torch::kUInt8 && (grid.size(2) == 1 || grid.size(2) == 3),
        "labelled grid: expected uint8 [H,W,1|3]");
  check(!labels.empty(), "labelled grid: no labels");
  const int H = static_cast<int>(grid.size(0)), W = static_cast<int>(grid.size(1)), margin = 110;
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W + margin, H);
  const int stride = cairo_image_surface_get_stride(surface);
  cairo_surface_flush(surface);
  unsigned char* px = cairo_image_surface_get_data(surface);
  auto g = grid.contiguous();
  const uint8_t* src = g.data_ptr<uint8_t>();
  const int64_t C = g.size(2);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W + margin; ++x) {
      uint32_t rgb = 0xFFFFFF;
      if (x >= margin) {
        const uint8_t* p = src + (static_cast<int64_t>(y) * W + (x - margin)) * C;
        rgb = C == 1 ? (uint32_t(p[0]) << 16 | uint32_t(p[0]) << 8 | p[0]) : (uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]);
      }
      *reinterpret_cast<uint32_t*>(px + y * stride + 4 * x) = rgb;
    }
  cairo_surface_mark_dirty(surface);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  const double row_h = static_cast<double>(H) / static_cast<double>(labels.size());
  cairo_set_font_size(cr, std::min(13.0, row_h * 0.45));
  for (size_t r = 0; r < labels.size(); ++r) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, labels[r].c_str(), &e);
    cairo_move_to(cr, margin - 6 - e.width, (r + 0.5) * row_h + e.height / 2);
    cairo_show_text(cr, labels[r].c_str());
  }
  cairo_destroy(cr);
  std::string png;
  const auto st = cairo_surface_write_to_png_stream(surface, append_png, &png);
  cairo_surface_destroy(surface);
  check(st == CAIRO_STATUS_SUCCESS, path, ": PNG encoding failed");
  write_file_atomic(path, png);
#else
  (void)labels;
  write_image(path, grid);
#endif
}

}  // namespace rar::io
