// Philox4x32-10 and the vectorised normal / uniform fills (kernels/cpu/philox.h): the known
// answers of the published generator, every instruction-set variant against the plain C++ one
// bit for bit, and the f32 values against a double-precision evaluation of the same formulas
// (log and sincos are loom's polynomials: within 2e-6 relative of the exact value, plus the
// rounding of the f32 operations around them).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/philox.h"
#include "kernels/cpu/philox_variants.h"

namespace loom::kernels::cpu {
namespace {

// The known-answer vectors of the Philox authors' Random123 distribution (kat_vectors).
TEST(Philox, KnownAnswers) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}};
  for (const Kat& k : kats) {
    uint32_t out[4];
    philox4x32_10(k.ctr, k.key, out);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], k.out[i]) << "word " << i;
  }
}

using NormalFn = void (*)(float*, int64_t, uint64_t, uint64_t, float, float);
using UniformFn = void (*)(float*, int64_t, uint64_t, uint64_t, float, float, float);

struct Variant {
  const char* name;
  CpuLevel needs;
  NormalFn normal;
  UniformFn uniform;
};

const Variant kVariants[] = {
    {"avx2", CpuLevel::avx2, philox_normal_f32_avx2, philox_uniform_f32_avx2},
    {"avx512", CpuLevel::avx512, philox_normal_f32_avx512, philox_uniform_f32_avx512}};

// Odd starts and lengths: partial groups at both ends, whole groups between.
struct Range {
  uint64_t first;
  int64_t n;
};
const Range kRanges[] = {{0, 64}, {0, 1000}, {5, 3}, {37, 200}, {64 * 1000 + 17, 777},
                         {(uint64_t(1) << 38) + 3, 300}};

TEST(Philox, EveryVariantGivesTheBitsOfThePlainCode) {
  for (const Variant& v : kVariants) {
    if (max_cpu_level_index() < int(v.needs)) continue;
    for (uint64_t seed : {uint64_t(0), uint64_t(42), uint64_t(0x123456789abcdefull)})
      for (const Range& r : kRanges) {
        std::vector<float> want(size_t(r.n)), got(size_t(r.n));
        philox_normal_f32_scalar(want.data(), r.n, seed, r.first, 0.5f, 2.0f);
        v.normal(got.data(), r.n, seed, r.first, 0.5f, 2.0f);
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4))
            << v.name << " normal, seed " << seed << " first " << r.first;
        philox_uniform_f32_scalar(want.data(), r.n, seed, r.first, -1.0f, 3.0f, 1.9999999f);
        v.uniform(got.data(), r.n, seed, r.first, -1.0f, 3.0f, 1.9999999f);
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4))
            << v.name << " uniform, seed " << seed << " first " << r.first;
      }
  }
}

TEST(Philox, DispatchAtEveryLevelGivesTheSameBits) {
  const int64_t n = 4099;
  std::vector<float> want(n), got(n);
  philox_normal_f32_scalar(want.data(), n, 7, 3, 0.0f, 1.0f);
  for (int level = 0; level <= max_cpu_level_index(); ++level) {
    CpuLevelGuard cap{CpuLevel(level)};
    philox_normal_f32(got.data(), n, 7, 3, 0.0f, 1.0f);
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), n * 4)) << to_string(CpuLevel(level));
  }
}

// Each value from its own word(s), by the formulas of philox.h evaluated in double.
TEST(Philox, ValuesFollowTheirWords) {
  const uint64_t seed = 99, first = 130;
  const int64_t n = 20000;
  std::vector<float> u(n), z(n);
  philox_uniform_f32(u.data(), n, seed, first, 0.0f, 1.0f, 0.99999994f);
  philox_normal_f32(z.data(), n, seed, first, 0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t p = first + uint64_t(i);
    ASSERT_EQ(u[i], float(philox_word(seed, p) >> 8) * 0x1.0p-24f) << p;
    const uint64_t word = p % 64 / 16, p0 = p - (word & 1) * 16;
    const double u1 = 1.0 - double(philox_word(seed, p0) >> 8) * 0x1.0p-24;
    const double u2 = double(philox_word(seed, p0 + 16) >> 8) * 0x1.0p-24;
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * std::numbers::pi * u2;
    const double ref = r * ((word & 1) ? std::sin(a) : std::cos(a));
    ASSERT_NEAR(z[i], ref, 2e-6 * (1.0 + std::abs(ref))) << "position " << p;
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
