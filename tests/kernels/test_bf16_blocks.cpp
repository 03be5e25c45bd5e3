// The elementwise kernels' bf16 <-> f32 block conversions (kernels/cpu/elementwise_loops.h)
// convert 8 values at a time in registers; they must give the bits of the scalar rules in
// core/half.h for every input: all 65,536 bf16 patterns widened, and narrowing of every
// f32 exponent with many mantissas, the rounding ties, infinities and NaNs (including
// signalling ones, which become quiet). Block lengths that are not multiples of 8 exercise
// the scalar tail.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/elementwise_loops.h"

namespace loom {
namespace {

namespace ew = kernels::cpu::ew;

TEST(Bf16Blocks, WideningEveryPatternMatchesTheScalarRule) {
  std::vector<BFloat16> in(65536 + 3);
  for (size_t i = 0; i < in.size(); ++i) in[i].bits = uint16_t(i);
  std::vector<float> out(in.size());
  ew::load_block(in.data(), out.data(), int64_t(in.size()));
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(bf16_to_f32(in[i].bits)))
        << "bf16 bits 0x" << std::hex << in[i].bits;
}

TEST(Bf16Blocks, NarrowingMatchesTheScalarRuleBitForBit) {
  std::vector<uint32_t> bits;
  // Every exponent and sign, with mantissas at and around the rounding boundary (ties to even
  // and odd), the extremes, and random ones.
  std::mt19937 gen(7);
  for (uint32_t sign = 0; sign < 2; ++sign)
    for (uint32_t exp = 0; exp < 256; ++exp)
      for (uint32_t low : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu})
        for (uint32_t high : {0x00u, 0x01u, 0x40u, 0x7eu, 0x7fu}) {
          bits.push_back(sign << 31 | exp << 23 | high << 16 | low);
          bits.push_back(sign << 31 | exp << 23 | (gen() & 0x7fffffu));
        }
  for (int i = 0; i < 100000; ++i) bits.push_back(uint32_t(gen()));
  bits.push_back(0x7fa00001u);  // a signalling NaN
  bits.push_back(0xff800000u);  // -inf
  bits.push_back(0x7f7fffffu);  // the largest finite value rounds up to inf
  std::vector<float> in(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) in[i] = std::bit_cast<float>(bits[i]);
  std::vector<BFloat16> out(in.size());
  ew::store_block(in.data(), out.data(), int64_t(in.size()));
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(out[i].bits, f32_to_bf16(in[i])) << "f32 bits 0x" << std::hex << bits[i];
}

}  // namespace
}  // namespace loom
