// A tiny rasteriser for plots: lines, rectangles and text in a 5 x 7 pixel font, drawn onto an
// RgbImage (png_writer.h). No anti-aliasing: a loss plot needs to be legible, not pretty.
#pragma once

#include <cstdint>
#include <string>

#include "fabric/loggers/png_writer.h"

namespace loom {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

class Canvas {
 public:
  explicit Canvas(RgbImage& image) : image_(image) {}

  // Pixels outside the image are ignored, so that shapes may cross the border.
  void set(int x, int y, Rgb c);
  void fill_rect(int x0, int y0, int x1, int y1, Rgb c);  // inclusive corners
  // A straight line (Bresenham) `thickness` pixels wide.
  void line(int x0, int y0, int x1, int y1, Rgb c, int thickness = 1);
  // Text with its top-left corner at (x, y), each font pixel drawn `scale` x `scale`. Letters
  // are drawn in lower case; characters the font lacks are drawn as a box.
  void text(int x, int y, const std::string& s, Rgb c, int scale = 1);
  // Width in pixels that text(s, scale) takes.
  static int text_width(const std::string& s, int scale = 1);
  static constexpr int kGlyphWidth = 5, kGlyphHeight = 7, kAdvance = 6;

  int width() const { return image_.width; }
  int height() const { return image_.height; }

 private:
  RgbImage& image_;
};

}  // namespace loom
