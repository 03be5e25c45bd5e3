// Philox4x32-10: the scalar block function, the plain C++ variant of the fills (16 lanes as
// arrays: the reference the vector variants must match bit for bit) and the dispatch by
// cpu_level(). Compiled with -ffp-contract=off (CMakeLists.txt): fma is only std::fma.
#include "kernels/cpu/philox.h"

#include <cmath>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/philox_impl.h"
#include "kernels/cpu/philox_variants.h"

namespace loom::kernels::cpu {
namespace {

struct Scalar16 {
  struct I {
    uint32_t v[16];
  };
  struct F {
    float v[16];
  };
  template <class Op>
  static I map(I a, I b, Op op) {
    I r;
    for (int i = 0; i < 16; ++i) r.v[i] = op(a.v[i], b.v[i]);
    return r;
  }
  template <class Op>
  static F fmap(F a, F b, Op op) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = op(a.v[i], b.v[i]);
    return r;
  }
  static I set1(uint32_t x) {
    I r;
    for (uint32_t& v : r.v) v = x;
    return r;
  }
  static I iota(uint32_t b) {
    I r;
    for (uint32_t i = 0; i < 16; ++i) r.v[i] = b + i;
    return r;
  }
  static I add(I a, I b) { return map(a, b, [](uint32_t x, uint32_t y) { return x + y; }); }
  static I sub(I a, I b) { return map(a, b, [](uint32_t x, uint32_t y) { return x - y; }); }
  static I xor_(I a, I b) { return map(a, b, [](uint32_t x, uint32_t y) { return x ^ y; }); }
  static I and_(I a, I b) { return map(a, b, [](uint32_t x, uint32_t y) { return x & y; }); }
  static I or_(I a, I b) { return map(a, b, [](uint32_t x, uint32_t y) { return x | y; }); }
  static I andnot(I a, I b) { return map(a, b, [](uint32_t x, uint32_t y) { return ~x & y; }); }
  template <int N> static I shr(I a) {
    for (uint32_t& v : a.v) v >>= N;
    return a;
  }
  template <int N> static I sra(I a) {
    for (uint32_t& v : a.v) v = uint32_t(int32_t(v) >> N);
    return a;
  }
  template <int N> static I shl(I a) {
    for (uint32_t& v : a.v) v <<= N;
    return a;
  }
  static void mulhilo(I a, uint32_t m, I& hi, I& lo) {
    for (int i = 0; i < 16; ++i) {
      const uint64_t p = uint64_t(a.v[i]) * m;
      hi.v[i] = uint32_t(p >> 32);
      lo.v[i] = uint32_t(p);
    }
  }
  static F fset1(float x) {
    F r;
    for (float& v : r.v) v = x;
    return r;
  }
  static F fadd(F a, F b) { return fmap(a, b, [](float x, float y) { return x + y; }); }
  static F fmul(F a, F b) { return fmap(a, b, [](float x, float y) { return x * y; }); }
  static F fmin(F a, F b) { return fmap(a, b, [](float x, float y) { return x < y ? x : y; }); }
  static F ffma(F a, F b, F c) {
    for (int i = 0; i < 16; ++i) a.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return a;
  }
  static F fsqrt(F a) {
    for (float& v : a.v) v = std::sqrt(v);
    return a;
  }
  static F cvt(I a) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = float(int32_t(a.v[i]));
    return r;
  }
  static I bits(F a) {
    I r;
    std::memcpy(r.v, a.v, sizeof r.v);
    return r;
  }
  static F from_bits(I a) {
    F r;
    std::memcpy(r.v, a.v, sizeof r.v);
    return r;
  }
  static void store(float* p, F a) { std::memcpy(p, a.v, sizeof a.v); }
};

bool has_avx2() {
  const CpuFlags& f = cpu_capability().flags;
  return f.avx2 && f.fma;
}

}  // namespace

void philox_normal_f32_scalar(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                              float std) {
  normal_fill<Scalar16>(out, n, seed, first, mean, std);
}

void philox_uniform_f32_scalar(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                               float span, float cap) {
  uniform_fill<Scalar16>(out, n, seed, first, lo, span, cap);
}

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]}, k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = uint64_t(kPhiloxM0) * c[0], p1 = uint64_t(kPhiloxM1) * c[2];
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c[0] = hi1 ^ c[1] ^ k0;
    c[1] = lo1;
    c[2] = hi0 ^ c[3] ^ k1;
    c[3] = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  for (int i = 0; i < 4; ++i) out[i] = c[i];
}

uint32_t philox_word(uint64_t seed, uint64_t p) {
  const uint64_t block = p / 64 * 16 + p % 16;
  const uint32_t ctr[4] = {uint32_t(block), uint32_t(block >> 32), 0, 0};
  const uint32_t key[2] = {uint32_t(seed), uint32_t(seed >> 32)};
  uint32_t out[4];
  philox4x32_10(ctr, key, out);
  return out[p % 64 / 16];
}

void philox_normal_f32(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                       float std) {
  const CpuLevel level = cpu_level();
  if (level >= CpuLevel::avx512) return philox_normal_f32_avx512(out, n, seed, first, mean, std);
  if (level >= CpuLevel::avx2 && has_avx2())
    return philox_normal_f32_avx2(out, n, seed, first, mean, std);
  philox_normal_f32_scalar(out, n, seed, first, mean, std);
}

void philox_uniform_f32(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                        float span, float cap) {
  const CpuLevel level = cpu_level();
  if (level >= CpuLevel::avx512)
    return philox_uniform_f32_avx512(out, n, seed, first, lo, span, cap);
  if (level >= CpuLevel::avx2 && has_avx2())
    return philox_uniform_f32_avx2(out, n, seed, first, lo, span, cap);
  philox_uniform_f32_scalar(out, n, seed, first, lo, span, cap);
}

}  // namespace loom::kernels::cpu
