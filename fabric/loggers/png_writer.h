// A small PNG encoder for 8-bit RGB images (the loss plots of plot.h), with no library behind it.
//
// The file is a PNG signature, IHDR, one IDAT and IEND (PNG specification, ISO/IEC 15948), each
// chunk with its CRC-32. Rows use filter 0 (None) for the first and 2 (Up: the byte above is
// subtracted) for the others, so that a row like the one above it becomes a run of zeros. The
// zlib stream (RFC 1950) holds one deflate block with the fixed Huffman codes (RFC 1951 3.2.6)
// whose only back-references are runs: a byte repeated 3 to 258 times at distance 1. A plot is
// mostly flat background, which this shrinks about 50 times; photographs would barely shrink,
// and this writer is not meant for them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom {

// An RGB image: width * height pixels, row by row from the top, 3 bytes each.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;

  RgbImage() = default;
  RgbImage(int w, int h, uint8_t r = 255, uint8_t g = 255, uint8_t b = 255);
};

// The PNG file's bytes. Throws loom::ValueError for an empty image or one whose pixel buffer
// does not hold width * height * 3 bytes.
std::string encode_png(const RgbImage& image);
// encode_png written to `path` atomically (fabric/io/atomic_file.h): a failed write leaves an
// existing file as it was. Throws loom::RuntimeError when the file cannot be written.
void write_png(const std::string& path, const RgbImage& image);

// The checksums PNG and zlib use, exposed for tests: CRC-32 (ISO-HDLC, as PNG chunks use it)
// and Adler-32 (the zlib trailer).
uint32_t png_crc32(const uint8_t* data, size_t n, uint32_t crc = 0);
uint32_t adler32(const uint8_t* data, size_t n, uint32_t adler = 1);

}  // namespace loom
