// Line plots (see line_plot.h).
#include "fabric/loggers/line_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace loom {

namespace {

constexpr Rgb kBlack{0, 0, 0}, kGrid{225, 225, 225}, kAxisText{60, 60, 60};
// Colours that stay apart for readers with the common colour-vision deficiencies (Okabe-Ito).
constexpr Rgb kPalette[] = {{0, 114, 178},   {230, 159, 0},  {0, 158, 115},
                            {204, 121, 167}, {86, 180, 233}, {213, 94, 0}};

// Tick spacing: 1, 2 or 5 times a power of ten, giving about `target` intervals over the span.
double nice_step(double span, int target) {
  double raw = span / target;
  double power = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / power;
  double nice = f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10;
  return nice * power;
}

// The shortest of %.0f .. %.4f that shows the tick step's precision.
std::string tick_label(double v, double step) {
  int decimals = step >= 1 ? 0 : std::min(6, int(std::ceil(-std::log10(step) - 1e-9)));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, std::abs(v) < step * 1e-9 ? 0.0 : v);
  return buf;
}

struct Range {
  double lo = 0, hi = 1;
};

Range padded(double lo, double hi, double pad_fraction) {
  if (!(lo <= hi)) return {0, 1};
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
    double d = std::max(0.5, std::abs(hi) * 0.1);
    return {lo - d, hi + d};
  }
  double pad = (hi - lo) * pad_fraction;
  return {lo - pad, hi + pad};
}

}  // namespace

RgbImage render_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& options) {
  if (options.width < 200 || options.height < 150)
    throw ValueError("render_line_plot: the image must be at least 200 x 150 pixels, got " +
                     std::to_string(options.width) + " x " + std::to_string(options.height));
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const PlotSeries& s : series) {
    if (s.x.size() != s.y.size())
      throw ValueError("render_line_plot: series '" + s.label + "' has " +
                       std::to_string(s.x.size()) + " x values but " + std::to_string(s.y.size()) +
                       " y values; give one y per x");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  }
  Range xr = padded(xmin, xmax, 0.0), yr = padded(ymin, ymax, 0.05);

  RgbImage image(options.width, options.height);
  Canvas canvas(image);
  const int left = 64, right = options.width - 16, top = options.title.empty() ? 16 : 36;
  const int bottom = options.height - 40;
  auto px = [&](double x) {
    return left + int(std::lround((x - xr.lo) / (xr.hi - xr.lo) * (right - left)));
  };
  auto py = [&](double y) {
    return bottom - int(std::lround((y - yr.lo) / (yr.hi - yr.lo) * (bottom - top)));
  };

  // Grid and tick labels.
  double ys = nice_step(yr.hi - yr.lo, 6);
  for (double v = std::ceil(yr.lo / ys) * ys; v <= yr.hi + ys * 1e-9; v += ys) {
    int y = py(v);
    canvas.line(left, y, right, y, kGrid);
    std::string label = tick_label(v, ys);
    canvas.text(left - 6 - Canvas::text_width(label), y - 3, label, kAxisText);
  }
  double xs = nice_step(xr.hi - xr.lo, 8);
  for (double v = std::ceil(xr.lo / xs) * xs; v <= xr.hi + xs * 1e-9; v += xs) {
    int x = px(v);
    canvas.line(x, top, x, bottom, kGrid);
    std::string label = tick_label(v, xs);
    canvas.text(x - Canvas::text_width(label) / 2, bottom + 6, label, kAxisText);
  }
  canvas.line(left, top, left, bottom, kBlack);
  canvas.line(left, bottom, right, bottom, kBlack);
  canvas.text((left + right - Canvas::text_width(options.x_label)) / 2, bottom + 20,
              options.x_label, kAxisText);
  if (!options.title.empty())
    canvas.text((left + right - Canvas::text_width(options.title, 2)) / 2, 10, options.title,
                kBlack, 2);

  // Series, then the legend on top of them.
  for (const PlotSeries& s : series) {
    bool have_prev = false;
    int prev_x = 0, prev_y = 0;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      int x = px(s.x[i]), y = py(s.y[i]);
      if (have_prev) canvas.line(prev_x, prev_y, x, y, s.colour, 2);
      if (s.markers) canvas.fill_rect(x - 2, y - 2, x + 2, y + 2, s.colour);
      prev_x = x;
      prev_y = y;
      have_prev = true;
    }
  }
  int legend_width = 0;
  for (const PlotSeries& s : series)
    legend_width = std::max(legend_width, Canvas::text_width(s.label));
  int lx = right - legend_width - 40, ly = top + 8;
  if (!series.empty())
    canvas.fill_rect(lx - 6, ly - 6, right - 6, ly + int(series.size()) * 14, Rgb{255, 255, 255});
  for (const PlotSeries& s : series) {
    canvas.line(lx, ly + 3, lx + 20, ly + 3, s.colour, 2);
    canvas.text(lx + 26, ly, s.label, kBlack);
    ly += 14;
  }
  return image;
}

void plot_metrics_csv(const std::string& csv_path, const std::string& png_path,
                      const std::vector<std::string>& columns, PlotOptions options) {
  std::ifstream in(csv_path);
  if (!in) throw RuntimeError("plot_metrics_csv: cannot read '" + csv_path + "'");
  auto split = [](const std::string& line) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    if (!line.empty() && line.back() == ',') cells.emplace_back();
    return cells;
  };
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header = split(line);
  std::vector<size_t> index;
  for (const std::string& c : columns) {
    auto it = std::find(header.begin(), header.end(), c);
    if (it == header.end()) {
      std::string have;
      for (const std::string& h : header) have += (have.empty() ? "" : ", ") + h;
      throw ValueError("plot_metrics_csv: '" + csv_path + "' has no column '" + c +
                       "' (its columns: " + have + "); log that metric or plot another");
    }
    index.push_back(size_t(it - header.begin()));
  }
  std::vector<PlotSeries> series;
  for (size_t i = 0; i < columns.size(); ++i)
    series.push_back({columns[i], {}, {}, kPalette[i % std::size(kPalette)], false});
  while (std::getline(in, line)) {
    std::vector<std::string> cells = split(line);
    if (cells.empty() || cells[0].empty()) continue;
    double step = std::strtod(cells[0].c_str(), nullptr);
    for (size_t i = 0; i < columns.size(); ++i) {
      if (index[i] >= cells.size() || cells[index[i]].empty()) continue;
      series[i].x.push_back(step);
      series[i].y.push_back(std::strtod(cells[index[i]].c_str(), nullptr));
    }
  }
  // Sparse series (a validation loss every few hundred steps) get a dot at each point.
  size_t densest = 0;
  for (const PlotSeries& s : series) densest = std::max(densest, s.x.size());
  for (PlotSeries& s : series) s.markers = s.x.size() <= 1 || s.x.size() * 4 <= densest;
  write_png(png_path, render_line_plot(series, options));
}

}  // namespace loom
