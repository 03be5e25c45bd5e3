// DType (core/dtype.h) and the 16-bit float conversions (core/half.h): every f16 and bf16
// bit pattern decoded against a formula evaluated in double, f32 -> f16/bf16 rounding checked
// against an independent round-to-nearest-even reference on random values and on every tie
// point, the F16C instructions agreeing bit for bit, sizes, names and the promotion table.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "core/dtype.h"
#include "core/error.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();

// The value of an f16 bit pattern from its fields, in double.
double f16_value(uint16_t h) {
  double sign = (h & 0x8000) ? -1.0 : 1.0;
  int exp = (h >> 10) & 0x1f;
  int mant = h & 0x3ff;
  if (exp == 0x1f) return mant ? std::numeric_limits<double>::quiet_NaN() : sign * kInf;
  if (exp == 0) return sign * std::ldexp(double(mant), -24);
  return sign * std::ldexp(1.0 + double(mant) / 1024.0, exp - 15);
}

// Round-to-nearest-even of a finite double onto a binary format with `mant_bits` stored
// mantissa bits, smallest normal exponent `emin` and overflow threshold 2^(emax+1): the value
// is divided by its quantum (exact: a power of two), rounded with nearbyint (ties to even in
// the default rounding mode) and scaled back. Returns +-inf when the rounded value overflows.
double round_to_format(double x, int mant_bits, int emin, int emax) {
  if (x == 0.0 || std::isnan(x)) return x;
  int e = 0;
  std::frexp(std::abs(x), &e);  // |x| = m * 2^e, m in [0.5, 1): floor(log2|x|) = e - 1
  int q_exp = std::max(e - 1, emin) - mant_bits;
  double r = std::ldexp(std::nearbyint(std::ldexp(x, -q_exp)), q_exp);
  if (std::abs(r) >= std::ldexp(1.0, emax + 1)) return std::copysign(kInf, x);
  return r;
}
double ref_f16(float f) { return round_to_format(f, 10, -14, 15); }
double ref_bf16(float f) { return round_to_format(f, 7, -126, 127); }

bool same_value(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return got == want && std::signbit(got) == std::signbit(want);
}

// ---- decoding: every bit pattern ----

TEST(Half, EveryF16PatternDecodesToItsValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    double want = f16_value(uint16_t(h));
    float got = f16_to_f32(uint16_t(h));
    ASSERT_TRUE(same_value(got, want)) << std::hex << h << " -> " << got;
    if (std::isnan(want)) {  // the sign and the payload survive, made quiet
      ASSERT_EQ(std::bit_cast<uint32_t>(got), (uint32_t(h & 0x8000) << 16) | 0x7fc00000u |
                                                   (uint32_t(h & 0x3ff) << 13));
    }
  }
}

TEST(Half, EveryF16PatternRoundTripsThroughF32) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    uint16_t back = f32_to_f16(f16_to_f32(uint16_t(h)));
    bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
    // Signalling NaNs come back quiet (IEEE 754 conversions, F16C); everything else exactly.
    ASSERT_EQ(back, nan ? uint16_t(h | 0x200) : uint16_t(h)) << std::hex << h;
  }
}

TEST(BFloat16, EveryPatternDecodesAndRoundTrips) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    float f = bf16_to_f32(uint16_t(b));
    ASSERT_EQ(std::bit_cast<uint32_t>(f), b << 16);
    bool nan = (b & 0x7f80) == 0x7f80 && (b & 0x7f);
    ASSERT_EQ(f32_to_bf16(f), nan ? uint16_t(b | 0x40) : uint16_t(b)) << std::hex << b;
  }
}

// ---- encoding: edge values ----

TEST(Half, EdgeValues) {
  auto enc = [](float f) { return f32_to_f16(f); };
  EXPECT_EQ(enc(65504.0f), 0x7bff);  // max finite
  EXPECT_EQ(enc(65519.0f), 0x7bff);  // below the midpoint to 65536
  EXPECT_EQ(enc(65520.0f), 0x7c00);  // the tie rounds to even = 2^16 = inf
  EXPECT_EQ(enc(-65520.0f), 0xfc00);
  EXPECT_EQ(enc(1e10f), 0x7c00);
  EXPECT_EQ(enc(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(enc(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(std::isnan(f16_to_f32(enc(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(f16_to_f32(enc(-std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(enc(0.0f), 0x0000);
  EXPECT_EQ(enc(-0.0f), 0x8000);
  EXPECT_EQ(enc(std::ldexp(1.0f, -24)), 0x0001);         // smallest subnormal
  EXPECT_EQ(enc(std::ldexp(1.0f, -25)), 0x0000);         // tie between 0 and 2^-24: even is 0
  EXPECT_EQ(enc(-std::ldexp(1.0f, -25)), 0x8000);        // ... keeping the sign
  EXPECT_EQ(enc(1.5f * std::ldexp(1.0f, -25)), 0x0001);  // above the tie
  EXPECT_EQ(enc(3.0f * std::ldexp(1.0f, -25)), 0x0002);  // 1.5 units: tie, odd 1 -> even 2
  EXPECT_EQ(enc(5.0f * std::ldexp(1.0f, -25)), 0x0002);  // 2.5 units: tie, even 2 stays
  EXPECT_EQ(enc(std::ldexp(1.0f, -14)), 0x0400);         // smallest normal
  EXPECT_EQ(enc(std::ldexp(1023.5f, -24)), 0x0400);      // largest subnormal tie rounds up
  EXPECT_EQ(enc(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(enc(1.0f), 0x3c00);
  EXPECT_EQ(enc(1.0f + std::ldexp(1.0f, -11)), 0x3c00);           // tie, even stays
  EXPECT_EQ(enc(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);       // tie, odd rounds up
  EXPECT_EQ(enc(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)));
}

TEST(BFloat16, EdgeValues) {
  auto enc = [](float f) { return f32_to_bf16(f); };
  EXPECT_EQ(enc(1.0f), 0x3f80);
  EXPECT_EQ(enc(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie, even stays
  EXPECT_EQ(enc(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(enc(std::numeric_limits<float>::max()), 0x7f80);  // above the last midpoint: inf
  EXPECT_EQ(enc(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(enc(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(enc(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload lives only in the dropped low bits must not round into inf.
  EXPECT_TRUE(std::isnan(bf16_to_f32(enc(std::bit_cast<float>(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(enc(std::bit_cast<float>(0xffffffffu)))));
  EXPECT_EQ(enc(-0.0f), 0x8000);
  EXPECT_EQ(enc(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(enc(std::ldexp(1.0f, -133)), 0x0001);  // smallest bf16 subnormal
}

// ---- encoding against the reference ----

// Every midpoint between consecutive representable values, and its f32 neighbours, plus the
// representable values themselves: the cases where a rounding bug shows.
template <class Encode, class Decode, class Ref>
void check_ties(Encode enc, Decode dec, Ref ref, uint16_t max_finite) {
  for (uint32_t h = 0; h < max_finite; ++h) {
    for (uint32_t sign : {0u, 0x8000u}) {
      double lo = dec(uint16_t(h | sign)), hi = dec(uint16_t((h + 1) | sign));
      float mid = float((lo + hi) / 2);  // one more bit than the format: exact in f32
      ASSERT_EQ(double(mid), (lo + hi) / 2);
      for (float f : {float(lo), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f),
                      std::nextafter(mid, -1e30f)}) {
        double want = ref(f), got = dec(enc(f));
        ASSERT_TRUE(same_value(got, want)) << std::hexfloat << f << " -> " << got << " want " << want;
      }
    }
  }
}

TEST(Half, MatchesReferenceAtEveryTie) {
  check_ties(f32_to_f16, f16_to_f32, ref_f16, 0x7bff);
  // The midpoint past the max finite value: 65520 is the tie that goes to inf.
  EXPECT_EQ(ref_f16(65520.0f), kInf);
  EXPECT_EQ(ref_f16(std::nextafter(65520.0f, 0.0f)), 65504.0);
}

TEST(BFloat16, MatchesReferenceAtEveryTie) {
  check_ties(f32_to_bf16, bf16_to_f32, ref_bf16, 0x7f7f);
}

TEST(HalfAndBFloat16, MatchReferenceOnRandomBitPatterns) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<float> small(-70000.0f, 70000.0f);
  for (int i = 0; i < 400000; ++i) {
    // Half raw bit patterns (all magnitudes, subnormals, inf, nan), half f16-range values.
    float f = (i & 1) ? std::bit_cast<float>(bits(rng)) : small(rng);
    ASSERT_TRUE(same_value(f16_to_f32(f32_to_f16(f)), ref_f16(f))) << std::hexfloat << f;
    ASSERT_TRUE(same_value(bf16_to_f32(f32_to_bf16(f)), ref_bf16(f))) << std::hexfloat << f;
  }
}

#if defined(__F16C__)
// The vectorised f16 blocks use F16C; the scalar conversion must agree bit for bit, NaNs
// included, or a tensor's bits would depend on where its 8-wide blocks fall.
TEST(Half, AgreesWithF16CInstructions) {
  alignas(32) uint16_t h[8];
  alignas(32) float f[8];
  for (uint32_t base = 0; base < 0x10000; base += 8) {
    for (int k = 0; k < 8; ++k) h[k] = uint16_t(base + k);
    _mm256_store_ps(f, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h))));
    for (int k = 0; k < 8; ++k)
      ASSERT_EQ(std::bit_cast<uint32_t>(f16_to_f32(h[k])), std::bit_cast<uint32_t>(f[k]))
          << std::hex << h[k];
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; i += 8) {
    for (int k = 0; k < 8; ++k) f[k] = std::bit_cast<float>(bits(rng));
    __m128i out = _mm256_cvtps_ph(_mm256_load_ps(f), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_store_si128(reinterpret_cast<__m128i*>(h), out);
    for (int k = 0; k < 8; ++k) ASSERT_EQ(f32_to_f16(f[k]), h[k]) << std::hexfloat << f[k];
  }
}
#endif

TEST(DType, ScalarHelpersConvertThroughHalfTypes) {
  EXPECT_EQ(from_double<Half>(0.1).bits, f32_to_f16(0.1f));
  EXPECT_EQ(to_double(BFloat16{0x3f80}), 1.0);
  EXPECT_TRUE(from_double<bool>(0.5));
  EXPECT_FALSE(from_double<bool>(0.0));
  EXPECT_EQ(from_double<int32_t>(-3.0), -3);
}

// ---- sizes, names, promotion ----

TEST(DType, SizesAndCategories) {
  EXPECT_EQ(dtype_size(DType::f64), 8u);
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::f16), 2u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_EQ(dtype_size(DType::i32), 4u);
  EXPECT_EQ(dtype_size(DType::u8), 1u);
  EXPECT_EQ(dtype_size(DType::bool_), 1u);
  static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2);
  for (DType d : kAllDTypes) {
    EXPECT_NE(is_floating(d), is_integral(d)) << d;
    EXPECT_EQ(is_low_precision(d), d == DType::f16 || d == DType::bf16);
    visit_dtype(d, [&](auto z) { EXPECT_EQ(sizeof(z), dtype_size(d)) << d; });
  }
  EXPECT_FALSE(is_integral(DType::bool_, /*include_bool=*/false));
}

TEST(DType, NamesRoundTrip) {
  const char* names[] = {"f64", "f32", "f16", "bf16", "i64", "i32", "u8", "bool"};
  for (size_t i = 0; i < std::size(kAllDTypes); ++i) {
    EXPECT_EQ(dtype_name(kAllDTypes[i]), names[i]);
    EXPECT_EQ(dtype_from_name(names[i]), kAllDTypes[i]);
    std::ostringstream os;
    os << kAllDTypes[i];
    EXPECT_EQ(os.str(), names[i]);
  }
  EXPECT_EQ(dtype_from_name("float32"), DType::f32);
  EXPECT_EQ(dtype_from_name("float"), DType::f32);
  EXPECT_EQ(dtype_from_name("double"), DType::f64);
  EXPECT_EQ(dtype_from_name("half"), DType::f16);
  EXPECT_EQ(dtype_from_name("bfloat16"), DType::bf16);
  EXPECT_EQ(dtype_from_name("long"), DType::i64);
  EXPECT_EQ(dtype_from_name("int"), DType::i32);
  EXPECT_EQ(dtype_from_name("uint8"), DType::u8);
}

TEST(DType, UnknownNameIsAValueErrorListingValidNames) {
  for (const char* bad : {"f8", "", "F32", "float128", "complex64"}) {
    try {
      dtype_from_name(bad);
      FAIL() << bad;
    } catch (const ValueError& e) {
      EXPECT_THAT(e.what(), HasSubstr(std::string("'") + bad + "'"));
      EXPECT_THAT(e.what(), HasSubstr("f64, f32, f16, bf16, i64, i32, u8, bool"));
    }
  }
}

TEST(DType, PromotionTable) {
  using D = DType;
  // Rows and columns in kAllDTypes order: f64 f32 f16 bf16 i64 i32 u8 bool (PyTorch's table).
  const D table[8][8] = {
      {D::f64, D::f64, D::f64, D::f64, D::f64, D::f64, D::f64, D::f64},
      {D::f64, D::f32, D::f32, D::f32, D::f32, D::f32, D::f32, D::f32},
      {D::f64, D::f32, D::f16, D::f32, D::f16, D::f16, D::f16, D::f16},
      {D::f64, D::f32, D::f32, D::bf16, D::bf16, D::bf16, D::bf16, D::bf16},
      {D::f64, D::f32, D::f16, D::bf16, D::i64, D::i64, D::i64, D::i64},
      {D::f64, D::f32, D::f16, D::bf16, D::i64, D::i32, D::i32, D::i32},
      {D::f64, D::f32, D::f16, D::bf16, D::i64, D::i32, D::u8, D::u8},
      {D::f64, D::f32, D::f16, D::bf16, D::i64, D::i32, D::u8, D::bool_},
  };
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) {
      EXPECT_EQ(promote_types(kAllDTypes[i], kAllDTypes[j]), table[i][j])
          << kAllDTypes[i] << " + " << kAllDTypes[j];
      EXPECT_EQ(promote_types(kAllDTypes[i], kAllDTypes[j]),
                promote_types(kAllDTypes[j], kAllDTypes[i]));
    }
}

}  // namespace
}  // namespace loom
