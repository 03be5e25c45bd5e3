// PNG encoding (see png_writer.h for the format choices).
#include "fabric/loggers/png_writer.h"

#include <array>

#include "fabric/io/atomic_file.h"
#include "core/error.h"

namespace loom {

RgbImage::RgbImage(int w, int h, uint8_t r, uint8_t g, uint8_t b) : width(w), height(h) {
  if (w <= 0 || h <= 0)
    throw ValueError("RgbImage: width and height must be positive, got " + std::to_string(w) +
                     " x " + std::to_string(h));
  pixels.resize(size_t(w) * size_t(h) * 3);
  for (size_t i = 0; i < pixels.size(); i += 3) {
    pixels[i] = r;
    pixels[i + 1] = g;
    pixels[i + 2] = b;
  }
}

namespace {

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  return table;
}

// Bits are packed from the least significant bit of each byte on (RFC 1951 3.1.1).
class BitWriter {
 public:
  explicit BitWriter(std::string& out) : out_(out) {}
  // The low `count` bits of `value`, least significant first (extra bits, block headers).
  void bits(uint32_t value, int count) {
    for (int i = 0; i < count; ++i) bit((value >> i) & 1);
  }
  // A Huffman code of `length` bits, most significant bit first (RFC 1951 3.1.1).
  void code(uint32_t value, int length) {
    for (int i = length - 1; i >= 0; --i) bit((value >> i) & 1);
  }
  void flush() {
    if (used_ > 0) out_.push_back(char(current_));
    current_ = 0;
    used_ = 0;
  }

 private:
  void bit(uint32_t b) {
    current_ |= uint8_t(b << used_);
    if (++used_ == 8) flush();
  }
  std::string& out_;
  uint8_t current_ = 0;
  int used_ = 0;
};

// The fixed literal/length code of symbol 0..287 (RFC 1951 3.2.6).
void fixed_symbol(BitWriter& w, int symbol) {
  if (symbol < 144)
    w.code(0x30 + symbol, 8);
  else if (symbol < 256)
    w.code(0x190 + (symbol - 144), 9);
  else if (symbol < 280)
    w.code(symbol - 256, 7);
  else
    w.code(0xC0 + (symbol - 280), 8);
}

// A back-reference of `length` (3..258) bytes at distance 1 (RFC 1951 3.2.5).
void run_reference(BitWriter& w, int length) {
  static constexpr int base[] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
  static constexpr int extra[] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
  int i = 28;
  while (base[i] > length) --i;
  fixed_symbol(w, 257 + i);
  w.bits(uint32_t(length - base[i]), extra[i]);
  w.code(0, 5);  // distance code 0: distance 1, no extra bits
}

// A zlib stream of `data`: one final fixed-Huffman block of literals and runs.
std::string zlib_compress(const std::vector<uint8_t>& data) {
  std::string out;
  out.push_back(char(0x78));  // deflate, 32 KiB window
  out.push_back(char(0x01));  // no preset dictionary; (0x78 * 256 + 0x01) % 31 == 0
  BitWriter w(out);
  w.bits(1, 1);  // BFINAL
  w.bits(1, 2);  // BTYPE 01: fixed Huffman codes
  size_t i = 0;
  while (i < data.size()) {
    uint8_t b = data[i];
    fixed_symbol(w, b);
    size_t run = 0;  // further copies of b right after it
    while (i + 1 + run < data.size() && data[i + 1 + run] == b) ++run;
    i += 1;
    while (run >= 3) {
      int len = int(std::min<size_t>(run, 258));
      if (run - size_t(len) > 0 && run - size_t(len) < 3) len -= 3;  // leave a run of >= 3 or none
      run_reference(w, len);
      run -= size_t(len);
      i += size_t(len);
    }
    for (; run > 0; --run, ++i) fixed_symbol(w, b);
  }
  fixed_symbol(w, 256);  // end of block
  w.flush();
  uint32_t a = adler32(data.data(), data.size());
  for (int s = 24; s >= 0; s -= 8) out.push_back(char((a >> s) & 0xFF));
  return out;
}

void put_u32(std::string& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(char((v >> s) & 0xFF));
}

void put_chunk(std::string& out, const char type[5], const std::string& data) {
  put_u32(out, uint32_t(data.size()));
  std::string body = std::string(type, 4) + data;
  out += body;
  put_u32(out, png_crc32(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
}

}  // namespace

uint32_t png_crc32(const uint8_t* data, size_t n, uint32_t crc) {
  const auto& t = crc_table();
  uint32_t c = crc ^ 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = t[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t adler32(const uint8_t* data, size_t n, uint32_t adler) {
  uint32_t a = adler & 0xFFFF, b = adler >> 16;
  for (size_t i = 0; i < n; ++i) {
    a = (a + data[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

std::string encode_png(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0)
    throw ValueError("encode_png: the image is empty (" + std::to_string(image.width) + " x " +
                     std::to_string(image.height) + "); give it a positive width and height");
  const size_t stride = size_t(image.width) * 3;
  if (image.pixels.size() != stride * size_t(image.height))
    throw ValueError("encode_png: a " + std::to_string(image.width) + " x " +
                     std::to_string(image.height) + " RGB image needs " +
                     std::to_string(stride * size_t(image.height)) + " pixel bytes, got " +
                     std::to_string(image.pixels.size()));
  std::vector<uint8_t> filtered;
  filtered.reserve((stride + 1) * size_t(image.height));
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* row = image.pixels.data() + size_t(y) * stride;
    filtered.push_back(y == 0 ? 0 : 2);  // None for the first row, Up for the others
    for (size_t x = 0; x < stride; ++x)
      filtered.push_back(y == 0 ? row[x] : uint8_t(row[x] - row[x - stride]));
  }
  std::string out = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_u32(ihdr, uint32_t(image.width));
  put_u32(ihdr, uint32_t(image.height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8 bits, RGB, deflate, adaptive, no interlace
  put_chunk(out, "IHDR", ihdr);
  put_chunk(out, "IDAT", zlib_compress(filtered));
  put_chunk(out, "IEND", "");
  return out;
}

void write_png(const std::string& path, const RgbImage& image) {
  write_file_atomically(path, encode_png(image));
}

}  // namespace loom
