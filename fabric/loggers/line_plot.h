// Line plots of logged metrics as PNG files: the loss curve a trainer writes next to its
// metrics.csv (CSVLogger), so that a user can look at a run instead of reading numbers.
//
// Axes get "nice" ticks (1, 2 or 5 times a power of ten) with grid lines and labels; each series
// is a 2-pixel line in its colour, optionally with a dot at every point (for sparse series such
// as a validation loss), and is named in a legend. Non-finite values are left out.
#pragma once

#include <string>
#include <vector>

#include "fabric/loggers/raster.h"

namespace loom {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;  // the same length
  Rgb colour;
  bool markers = false;
};

struct PlotOptions {
  std::string title;
  std::string x_label = "step";
  int width = 800;
  int height = 480;
};

// The plot as an image. Throws loom::ValueError when a series' x and y differ in length or the
// image is smaller than 200 x 150 pixels. Series without finite points are listed in the
// legend but draw nothing; with no points at all the axes span [0, 1].
RgbImage render_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& options);

// Reads a metrics.csv written by CSVLogger and plots `columns` (metric names) against step,
// each in a colour of its own, to `png_path` (written atomically). Rows where a column's cell is
// empty are skipped for that column; a column with a single point gets markers. Throws
// loom::RuntimeError when the CSV cannot be read, loom::ValueError when it lacks a column
// (naming the columns it has).
void plot_metrics_csv(const std::string& csv_path, const std::string& png_path,
                      const std::vector<std::string>& columns, PlotOptions options = {});

}  // namespace loom
