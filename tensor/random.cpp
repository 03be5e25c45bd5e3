#include "tensor/random.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numbers>
#include <type_traits>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/philox.h"
#include "tensor/native.h"

namespace loom {
namespace {

// SplitMix64 finaliser over (seed, counter): a strong 64-bit mix, cheap enough (a few ns per
// element) that filling a billion parameters stays memory-bound on two threads.
inline uint64_t mix(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// Uniform in [0, 1) with 53 random bits.
inline double unit(uint64_t bits) { return double(bits >> 11) * 0x1.0p-53; }

constexpr int64_t kGrain = 1 << 16;

// The largest value of dtype d below hi. A draw just under hi rounds up to hi when stored in
// a narrower type (for bf16 about one draw in 500 of [0, 1), for f32 one in 2^25), so
// fill_uniform pulls such draws back to this value: [lo, hi) stays half-open in every dtype.
double largest_below(double hi, DType d) {
  return visit_dtype(d, [&](auto z) -> double {
    using T = decltype(z);
    constexpr double kInf = std::numeric_limits<double>::infinity();
    if constexpr (std::is_same_v<T, double>) {
      return std::nextafter(hi, -kInf);
    } else if constexpr (std::is_same_v<T, float>) {
      float f = float(hi);
      return f < hi ? f : std::nextafter(f, -std::numeric_limits<float>::infinity());
    } else if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
      T v = from_double<T>(hi);
      if (to_double(v) >= hi) {  // one step towards -inf in the sign-magnitude encoding
        if ((v.bits & 0x7fff) == 0) v.bits = 0x8001;
        else v.bits = (v.bits & 0x8000) ? uint16_t(v.bits + 1) : uint16_t(v.bits - 1);
      }
      return to_double(v);
    } else {
      return hi;  // integer dtypes truncate towards zero
    }
  });
}

// Fills a contiguous tensor: value(i) for each element index i, converted to the dtype.
template <class ValueFn>
void fill_contiguous(const Tensor& t, ValueFn value) {
  if (t.is_meta() || t.numel() == 0) return;
  void* base = t.raw_data_ptr();
  visit_dtype(t.dtype(), [&](auto z) {
    using T = decltype(z);
    T* out = static_cast<T*>(base);
    kernels::parallel_for(0, t.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = from_double<T>(value(i));
    });
  });
}

// Runs fill on t directly when contiguous, else on a contiguous temporary copied back. The
// version moves once per fill, as for every other in-place write.
template <class FillFn>
void fill_any(const Tensor& t, FillFn fill) {
  if (t.is_contiguous()) {
    t.storage()->bump_version();
    return fill(t);
  }
  Tensor tmp = native::empty(t.sizes(), t.dtype(), t.device());
  fill(tmp);
  native::copy_(t, tmp);  // bumps t's version
}

// Positions per parallel chunk of the Philox fills, and per f32 block of a 16-bit fill.
constexpr int64_t kPhiloxGrain = int64_t(1) << 16;
constexpr int64_t kLowpBlock = 1024;

// Fills a contiguous tensor from the Philox stream at positions base + i: f32 straight from
// fill32(out, n, first) (kernels/cpu/philox.h), f16/bf16 through f32 blocks rounded once, f64
// and the integer dtypes from value64(position) in double.
template <class Fill32, class Value64>
void fill_philox(const Tensor& t, uint64_t base, Fill32 fill32, Value64 value64) {
  if (t.is_meta() || t.numel() == 0) return;
  void* data = t.raw_data_ptr();
  visit_dtype(t.dtype(), [&](auto z) {
    using T = decltype(z);
    T* out = static_cast<T*>(data);
    kernels::parallel_for(0, t.numel(), kPhiloxGrain, [&](int64_t b, int64_t e) {
      if constexpr (std::is_same_v<T, float>) {
        fill32(out + b, e - b, base + uint64_t(b));
      } else if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
        float block[kLowpBlock];
        for (int64_t i0 = b; i0 < e; i0 += kLowpBlock) {
          const int64_t n = std::min(kLowpBlock, e - i0);
          fill32(block, n, base + uint64_t(i0));
          for (int64_t i = 0; i < n; ++i) {
            if constexpr (std::is_same_v<T, Half>) {
              out[i0 + i] = Half{f32_to_f16(block[i])};
            } else {  // f32_to_bf16 without its NaN branch (the values are finite): vectorises
              uint32_t x = std::bit_cast<uint32_t>(block[i]);
              out[i0 + i] = BFloat16{uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
            }
          }
        }
      } else {
        for (int64_t i = b; i < e; ++i) out[i] = from_double<T>(value64(base + uint64_t(i)));
      }
    });
  });
}

// The Philox word of position p as a double in [0, 1) with 32 random bits.
inline double word_unit(uint64_t seed, uint64_t p) {
  return double(kernels::cpu::philox_word(seed, p)) * 0x1.0p-32;
}

}  // namespace

Generator& default_generator() {
  thread_local Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

void fill_uniform(const Tensor& t, double lo, double hi, Generator& g) {
  const uint64_t n = uint64_t(t.numel());
  const uint64_t seed = g.seed(), base = g.advance(n);
  double span = hi - lo;
  double cap = largest_below(hi, t.dtype());
  if (!(cap >= lo)) cap = hi;  // an empty interval [lo, lo) gives lo
  // In f32 (for f32, f16 and bf16): lo + span u, u = (w >> 8) 2^-24, then at most the largest
  // value of the dtype below hi (representable in f32, so rounding to 16 bits keeps it below).
  float cap32 = float(cap);
  if (double(cap32) > cap) cap32 = std::nextafter(cap32, -std::numeric_limits<float>::infinity());
  fill_any(t, [&](const Tensor& c) {
    fill_philox(
        c, base,
        [&](float* out, int64_t count, uint64_t first) {
          kernels::cpu::philox_uniform_f32(out, count, seed, first, float(lo), float(span), cap32);
        },
        [&](uint64_t p) { return std::min(lo + span * word_unit(seed, p), cap); });
  });
}

void fill_normal(const Tensor& t, double mean, double std, Generator& g) {
  // Box-Muller on Philox words 0 and 1 (2 and 3) of one block (kernels/cpu/philox.h); in
  // double for f64 from the same words, with 32-bit uniforms.
  const uint64_t n = uint64_t(t.numel());
  const uint64_t seed = g.seed(), base = g.advance(n);
  fill_any(t, [&](const Tensor& c) {
    fill_philox(
        c, base,
        [&](float* out, int64_t count, uint64_t first) {
          kernels::cpu::philox_normal_f32(out, count, seed, first, float(mean), float(std));
        },
        [&](uint64_t p) {
          // p's pair: the positions of words 2j and 2j + 1 of its block, 16 apart.
          const uint64_t word = p % 64 / 16, first_of_pair = p - (word & 1) * 16;
          const double u1 = 1.0 - word_unit(seed, first_of_pair);  // (0, 1]
          const double u2 = word_unit(seed, first_of_pair + 16);
          const double r = std::sqrt(-2.0 * std::log(u1));
          const double a = 2.0 * std::numbers::pi * u2;
          return mean + std * r * ((word & 1) ? std::sin(a) : std::cos(a));
        });
  });
}

void fill_randint(const Tensor& t, int64_t lo, int64_t hi, Generator& g) {
  if (hi <= lo)
    throw ValueError(detail::concat("randint: high (", hi, ") must be greater than low (", lo, ")"));
  uint64_t seed = g.seed(), base = g.advance(uint64_t(t.numel()));
  uint64_t span = uint64_t(hi - lo);
  fill_any(t, [&](const Tensor& c) {
    fill_contiguous(c, [&](int64_t i) {
      // Multiply-shift maps 64 random bits onto [0, span) without modulo bias worth noting.
      unsigned __int128 m = (unsigned __int128)mix(seed, base + i) * span;
      return double(lo + int64_t(uint64_t(m >> 64)));
    });
  });
}

namespace native {

Tensor dropout_mask(const Tensor& like, double p) {
  if (p < 0.0 || p > 1.0)
    throw ValueError(detail::concat("dropout: probability must be in [0, 1], got ", p));
  Tensor mask = empty(like.sizes(), like.dtype(), like.device());
  Generator& g = default_generator();
  uint64_t seed = g.seed(), base = g.advance(uint64_t(like.numel()));
  double keep = 1.0 - p, scale = keep > 0 ? 1.0 / keep : 0.0;
  fill_contiguous(mask, [&](int64_t i) { return unit(mix(seed, base + i)) < keep ? scale : 0.0; });
  return mask;
}

}  // namespace native
}  // namespace loom
