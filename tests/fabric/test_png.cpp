// The PNG writer and the loss plot: the files decode with an independent inflater (zlib) to
// exactly the pixels drawn, every chunk's CRC is right, and bad input is refused by name.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "fabric/loggers/line_plot.h"
#include "fabric/loggers/png_writer.h"
#include "core/error.h"

using namespace loom;

namespace {

uint32_t be32(const std::string& s, size_t at) {
  return uint32_t(uint8_t(s[at])) << 24 | uint32_t(uint8_t(s[at + 1])) << 16 |
         uint32_t(uint8_t(s[at + 2])) << 8 | uint32_t(uint8_t(s[at + 3]));
}

// Decodes an 8-bit RGB, non-interlaced PNG with zlib's inflate and the five row filters of the
// PNG specification, checking the signature, the chunk order and every chunk's CRC on the way.
RgbImage decode_png(const std::string& png) {
  RgbImage out;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n"));
  std::string idat;
  std::vector<std::string> types;
  size_t at = 8;
  while (at + 12 <= png.size()) {
    uint32_t length = be32(png, at);
    std::string type = png.substr(at + 4, 4);
    std::string data = png.substr(at + 8, length);
    uint32_t crc = be32(png, at + 8 + length);
    uLong expect = crc32(0, reinterpret_cast<const Bytef*>(png.data() + at + 4), length + 4);
    EXPECT_EQ(crc, uint32_t(expect)) << "chunk " << type;
    types.push_back(type);
    if (type == "IHDR") {
      out.width = int(be32(data, 0));
      out.height = int(be32(data, 4));
      EXPECT_EQ(data.substr(8), std::string("\x08\x02\x00\x00\x00", 5));
    } else if (type == "IDAT") {
      idat += data;
    }
    at += 12 + length;
  }
  EXPECT_EQ(at, png.size()) << "bytes after the last chunk";
  EXPECT_EQ(types.front(), "IHDR");
  EXPECT_EQ(types.back(), "IEND");
  const size_t stride = size_t(out.width) * 3;
  std::vector<uint8_t> raw((stride + 1) * size_t(out.height));
  uLongf raw_size = raw.size();
  EXPECT_EQ(
      uncompress(raw.data(), &raw_size, reinterpret_cast<const Bytef*>(idat.data()), idat.size()),
      Z_OK);
  EXPECT_EQ(raw_size, raw.size());
  out.pixels.assign(stride * size_t(out.height), 0);
  for (size_t y = 0; y < size_t(out.height); ++y) {
    uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    uint8_t* row = &out.pixels[y * stride];
    const uint8_t* up = y ? row - stride : nullptr;
    for (size_t x = 0; x < stride; ++x) {
      int a = x >= 3 ? row[x - 3] : 0, b = up ? up[x] : 0, c = (up && x >= 3) ? up[x - 3] : 0;
      int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
      int pred = filter == 0              ? 0
                 : filter == 1            ? a
                 : filter == 2            ? b
                 : filter == 3            ? (a + b) / 2
                 : (pa <= pb && pa <= pc) ? a
                 : pb <= pc               ? b
                                          : c;
      EXPECT_LE(filter, 4);
      row[x] = uint8_t(in[x] + pred);
    }
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(Png, ChecksumsMatchTheirReferences) {
  const std::string s = "123456789";
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  EXPECT_EQ(png_crc32(p, s.size()), 0xCBF43926u);  // the CRC-32 check value
  EXPECT_EQ(adler32(p, s.size()), uint32_t(::adler32(1, p, uInt(s.size()))));
}

TEST(Png, RandomPixelsAndLongRunsDecodeToTheSameBytes) {
  // Random bytes (literals), then rows of runs of every length from 1 to 700 (all the length
  // codes, runs longer than one reference), then repeated rows (the Up filter's zero rows).
  RgbImage image(301, 40);
  std::mt19937 rng(5);
  for (size_t i = 0; i < size_t(301 * 3 * 10); ++i) image.pixels[i] = uint8_t(rng());
  size_t i = 301 * 3 * 10, len = 1;
  while (i < size_t(301 * 3 * 30)) {
    uint8_t v = uint8_t(rng());
    for (size_t k = 0; k < len && i < size_t(301 * 3 * 30); ++k) image.pixels[i++] = v;
    len = len % 700 + 1;
  }
  for (; i < image.pixels.size(); ++i) image.pixels[i] = image.pixels[i - 301 * 3];
  RgbImage back = decode_png(encode_png(image));
  EXPECT_EQ(back.width, 301);
  EXPECT_EQ(back.height, 40);
  EXPECT_EQ(back.pixels, image.pixels);
}

TEST(Png, OnePixelAndAFlatImage) {
  RgbImage one(1, 1, 10, 20, 30);
  EXPECT_EQ(decode_png(encode_png(one)).pixels, one.pixels);
  RgbImage flat(800, 480, 255, 255, 255);
  std::string png = encode_png(flat);
  EXPECT_EQ(decode_png(png).pixels, flat.pixels);
  EXPECT_LT(png.size(), flat.pixels.size() / 50) << "runs should shrink a flat image";
}

TEST(Png, RefusesAMalformedImage) {
  RgbImage bad;
  bad.width = 2;
  bad.height = 2;
  bad.pixels.resize(11);
  try {
    encode_png(bad);
    FAIL() << "expected a ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("needs 12 pixel bytes, got 11"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(RgbImage(0, 3), ValueError);
}

TEST(LinePlot, DrawsEachSeriesInItsColourFromAMetricsCsv) {
  auto dir = std::filesystem::temp_directory_path() / ("loom_plot_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string csv = (dir / "metrics.csv").string(), png = (dir / "loss.png").string();
  {
    std::ofstream out(csv);
    out << "step,train_loss,val_loss\n";
    for (int s = 0; s <= 100; ++s) {
      out << s << "," << 5.0 - 3.0 * s / 100.0 << ",";
      if (s % 25 == 0) out << 5.2 - 3.0 * s / 100.0;
      out << "\n";
    }
  }
  plot_metrics_csv(csv, png, {"train_loss", "val_loss"},
                   {.title = "loss", .width = 400, .height = 300});
  RgbImage image = decode_png(read_file(png));
  ASSERT_EQ(image.width, 400);
  ASSERT_EQ(image.height, 300);
  auto count = [&](Rgb c) {
    size_t n = 0;
    for (size_t i = 0; i < image.pixels.size(); i += 3)
      n += image.pixels[i] == c.r && image.pixels[i + 1] == c.g && image.pixels[i + 2] == c.b;
    return n;
  };
  EXPECT_GT(count({0, 114, 178}), 300u);  // train: a 2-pixel line across the plot
  EXPECT_GT(count({230, 159, 0}), 100u);  // validation: line and markers
  // The training line falls from left to right: its leftmost pixel is above its rightmost.
  int first_x = -1, first_y = 0, last_x = -1, last_y = 0;
  for (int x = 70; x < 380; ++x)
    for (int y = 40; y < 255; ++y) {
      const uint8_t* p = &image.pixels[(size_t(y) * 400 + size_t(x)) * 3];
      if (p[0] == 0 && p[1] == 114 && p[2] == 178) {
        if (first_x < 0) first_x = x, first_y = y;
        last_x = x, last_y = y;
      }
    }
  ASSERT_GE(first_x, 0);
  EXPECT_LT(first_y, last_y);
  EXPECT_GT(last_x - first_x, 250);

  try {
    plot_metrics_csv(csv, png, {"accuracy"});
    FAIL() << "expected a ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "no column 'accuracy' (its columns: step, train_loss, val_loss)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(plot_metrics_csv((dir / "missing.csv").string(), png, {"x"}), RuntimeError);
  std::filesystem::remove_all(dir);
}
