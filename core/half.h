// 16-bit floating formats: IEEE binary16 (f16) and bfloat16 (bf16), stored as uint16_t.
//
// Conversions from f32 round to nearest, ties to even, and keep inf, nan and subnormals.
// They are plain bit manipulation (no F16C intrinsics) so that kernels, tests and every
// compiler agree bit for bit; hot loops convert blocks with these inline functions. A NaN
// keeps its sign and the top bits of its payload and comes out quiet, in both directions,
// exactly as the F16C instructions (and IEEE 754 conversions) do: the vectorised f16 blocks
// of kernels/cpu/elementwise_loops.h and this scalar tail then agree even on NaN bits.
#pragma once

#include <bit>
#include <cstdint>

namespace loom {

struct Half {
  uint16_t bits = 0;
};
struct BFloat16 {
  uint16_t bits = 0;
};

inline float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet nan
  // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f && mant == 0) return std::bit_cast<float>(sign | 0x7f800000u);  // inf
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7fc00000u | (mant << 13));  // quiet nan
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    // Subnormal: value = mant * 2^-24, exact in f32.
    float v = float(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t f32_to_f16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // quiet nan
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to inf (>= 65520)
  if (ax < 0x38800000u) {                                   // below the smallest normal 2^-14
    // Subnormal or zero: scale so that the f16 subnormal unit 2^-24 becomes 1, then round
    // to nearest even in integer arithmetic on the full mantissa.
    if (ax < 0x33000000u) return sign;  // < 2^-25 rounds to zero
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    // value = m * 2^(e-150); in units of the f16 subnormal step 2^-24 that is m >> (126 - e).
    uint32_t shift = 126u - e;  // 14..24
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return uint16_t(sign | q);
  }
  // Normal: rebias exponent 127 -> 15 and round the 13 dropped mantissa bits to nearest even.
  uint32_t r = ax - 0x38000000u;  // exponent - 112
  r += 0xfffu + ((r >> 13) & 1u);
  return uint16_t(sign | (r >> 13));
}

}  // namespace loom
