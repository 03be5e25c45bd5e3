// CRC-32C: a table-driven reference and the SSE4.2 instruction (see crc32c.h).
#include "fabric/io/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define LOOM_CRC32C_SSE42 1
#endif

namespace loom {
namespace {

constexpr uint32_t kPolynomial = 0x82F63B78;  // Castagnoli, bit-reversed

// table[b] is the CRC register after shifting byte b through eight rounds of polynomial division.
constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? kPolynomial : 0);
    table[b] = crc;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kTable = make_table();

#ifdef LOOM_CRC32C_SSE42
// The crc32 instruction computes exactly this polynomial's register update (without the pre-
// and post-inversion, which the callers do). Compiled for SSE4.2 whatever the build's flags;
// only called after the CPU check.
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const unsigned char* p, size_t n,
                                                         uint32_t reg) {
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {  // up to the first 8-byte boundary
    reg = _mm_crc32_u8(reg, *p++);
    --n;
  }
  uint64_t wide = reg;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    wide = _mm_crc32_u64(wide, word);
  }
  reg = static_cast<uint32_t>(wide);
  for (; n > 0; --n) reg = _mm_crc32_u8(reg, *p++);
  return reg;
}

bool cpu_has_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace

uint32_t crc32c_portable(const void* data, size_t size, uint32_t crc) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  // The pre- and post-inversion make the running value resumable: undo the last final xor.
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = (crc >> 8) ^ kTable[(crc ^ bytes[i]) & 0xff];
  return ~crc;
}

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
#ifdef LOOM_CRC32C_SSE42
  if (cpu_has_sse42()) return ~crc32c_sse42(static_cast<const unsigned char*>(data), size, ~crc);
#endif
  return crc32c_portable(data, size, crc);
}

}  // namespace loom
