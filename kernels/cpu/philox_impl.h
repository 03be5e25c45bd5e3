// The Philox fills of kernels/cpu/philox.h, written once over a 16-lane vector type V and
// included by one translation unit per instruction set (philox.cpp: plain C++,
// philox_avx2.cpp, philox_avx512.cpp), each compiled with -ffp-contract=off so that only the
// explicit fused multiply-adds below are fused and every variant rounds alike.
//
// V provides, on 16 lanes: I (32-bit integers) with set1, iota, add, sub, xor_, and_, or_,
// andnot (~a & b), shr<N> (logical), sra<N>, shl<N>, mulhilo (32 x 32 -> 64 bits, split);
// F (f32) with fset1, fadd, fmul, ffma, fsqrt, fmin (a < b ? a : b), cvt (int32 -> f32),
// bits / from_bits, store.
#pragma once

#include <cstdint>
#include <cstring>

namespace loom::kernels::cpu {
namespace {  // each including file gets its own copies (they differ by instruction set)

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

// Words 0-3 of the 16 Philox blocks of group g (counters 16 g + v, v = lane).
template <class V>
inline void philox_group(uint64_t g, uint64_t seed, typename V::I w[4]) {
  using I = typename V::I;
  const uint64_t first = g * 16;
  I c0 = V::iota(uint32_t(first)), c1 = V::set1(uint32_t(first >> 32));
  I c2 = V::set1(0), c3 = V::set1(0);
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    I hi0, lo0, hi1, lo1;
    V::mulhilo(c0, kPhiloxM0, hi0, lo0);
    V::mulhilo(c2, kPhiloxM1, hi1, lo1);
    c0 = V::xor_(V::xor_(hi1, c1), V::set1(k0));
    c1 = lo1;
    c2 = V::xor_(V::xor_(hi0, c3), V::set1(k1));
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  w[0] = c0, w[1] = c1, w[2] = c2, w[3] = c3;
}

// (a & mask) | (b & ~mask) on bits.
template <class V>
inline typename V::I select(typename V::I mask, typename V::I a, typename V::I b) {
  return V::or_(V::and_(mask, a), V::andnot(mask, b));
}

// ln x for x in (0, 1]: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln(m) by Cephes' logf
// polynomial in t = m - 1, relative error about 1e-7.
template <class V>
inline typename V::F log_unit(typename V::F x) {
  using I = typename V::I;
  using F = typename V::F;
  const I xb = V::bits(x);
  I e = V::sub(V::template shr<23>(xb), V::set1(126));  // x = m 2^e, m in [1/2, 1)
  const I mb = V::or_(V::and_(xb, V::set1(0x007fffffu)), V::set1(0x3f000000u));
  const I small = V::template sra<31>(V::sub(mb, V::set1(0x3f3504f3u)));  // m < sqrt(1/2)
  const F m = V::from_bits(mb);
  const F m2 = V::from_bits(select<V>(small, V::bits(V::fadd(m, m)), mb));  // 2m or m
  const F t = V::fadd(m2, V::fset1(-1.0f));
  e = V::add(e, small);  // small is -1 where m was doubled
  const F fe = V::cvt(e);
  const F z = V::fmul(t, t);
  F p = V::fset1(7.0376836292e-2f);
  p = V::ffma(p, t, V::fset1(-1.1514610310e-1f));
  p = V::ffma(p, t, V::fset1(1.1676998740e-1f));
  p = V::ffma(p, t, V::fset1(-1.2420140846e-1f));
  p = V::ffma(p, t, V::fset1(1.4249322787e-1f));
  p = V::ffma(p, t, V::fset1(-1.6668057665e-1f));
  p = V::ffma(p, t, V::fset1(2.0000714765e-1f));
  p = V::ffma(p, t, V::fset1(-2.4999993993e-1f));
  p = V::ffma(p, t, V::fset1(3.3333331174e-1f));
  F y = V::fmul(V::fmul(p, t), z);
  y = V::ffma(fe, V::fset1(-2.12194440e-4f), y);
  y = V::ffma(z, V::fset1(-0.5f), y);
  F r = V::fadd(t, y);
  return V::ffma(fe, V::fset1(0.693359375f), r);
}

// sin and cos of 2 pi k 2^-24 for 24-bit integers k: the nearest quarter turn j is taken out
// in integers, the rest (|phi| <= pi/4) goes through Cephes' sinf/cosf polynomials.
template <class V>
inline void sincos_turns(typename V::I k, typename V::F& s_out, typename V::F& c_out) {
  using I = typename V::I;
  using F = typename V::F;
  const I j = V::template shr<22>(V::add(k, V::set1(1u << 21)));
  const I ri = V::sub(k, V::template shl<22>(j));  // in [-2^21, 2^21)
  const F phi = V::fmul(V::cvt(ri), V::fset1(float(6.283185307179586 / 16777216.0)));
  const F z = V::fmul(phi, phi);
  F ps = V::ffma(V::fset1(-1.9515295891e-4f), z, V::fset1(8.3321608736e-3f));
  ps = V::ffma(ps, z, V::fset1(-1.6666654611e-1f));
  const F s = V::ffma(V::fmul(ps, z), phi, phi);
  F pc = V::ffma(V::fset1(2.443315711809948e-5f), z, V::fset1(-1.388731625493765e-3f));
  pc = V::ffma(pc, z, V::fset1(4.166664568298827e-2f));
  const F c = V::ffma(V::fmul(pc, z), z, V::ffma(z, V::fset1(-0.5f), V::fset1(1.0f)));
  const I one = V::set1(1), two = V::set1(2);
  const I swap = V::sub(V::set1(0), V::and_(j, one));  // odd quarter: sin <-> cos
  const I s_sign = V::template shl<30>(V::and_(j, two));
  const I c_sign = V::template shl<30>(V::and_(V::add(j, one), two));
  s_out = V::from_bits(V::xor_(select<V>(swap, V::bits(c), V::bits(s)), s_sign));
  c_out = V::from_bits(V::xor_(select<V>(swap, V::bits(s), V::bits(c)), c_sign));
}

template <class V>
inline void normal_group(uint64_t g, uint64_t seed, float mean, float std, float* dst) {
  using I = typename V::I;
  using F = typename V::F;
  I w[4];
  philox_group<V>(g, seed, w);
  const F vmean = V::fset1(mean), vstd = V::fset1(std), scale = V::fset1(0x1.0p-24f);
  for (int pair = 0; pair < 2; ++pair) {
    const I k1 = V::template shr<8>(w[2 * pair]), k2 = V::template shr<8>(w[2 * pair + 1]);
    const F u1 = V::fmul(V::cvt(V::sub(V::set1(1u << 24), k1)), scale);  // (0, 1]
    const F radius = V::fsqrt(V::fmul(log_unit<V>(u1), V::fset1(-2.0f)));
    F s, c;
    sincos_turns<V>(k2, s, c);
    V::store(dst + 32 * pair, V::ffma(vstd, V::fmul(radius, c), vmean));
    V::store(dst + 32 * pair + 16, V::ffma(vstd, V::fmul(radius, s), vmean));
  }
}

template <class V>
inline void uniform_group(uint64_t g, uint64_t seed, float lo, float span, float cap,
                          float* dst) {
  typename V::I w[4];
  philox_group<V>(g, seed, w);
  const typename V::F vlo = V::fset1(lo), vspan = V::fset1(span), vcap = V::fset1(cap);
  for (int l = 0; l < 4; ++l) {
    const typename V::F u = V::fmul(V::cvt(V::template shr<8>(w[l])), V::fset1(0x1.0p-24f));
    V::store(dst + 16 * l, V::fmin(V::ffma(vspan, u, vlo), vcap));
  }
}

// Positions [first, first + n) into out, whole groups straight into out, partial ones at
// the edges through a 64-value buffer.
template <class GroupFn>
inline void fill_positions(float* out, int64_t n, uint64_t first, GroupFn group) {
  uint64_t p = first;
  const uint64_t end = first + uint64_t(n);
  while (p < end) {
    const uint64_t g = p / 64, off = p % 64;
    const uint64_t take = end - p < 64 - off ? end - p : 64 - off;  // no std::min: no weak symbol
    if (take == 64) {
      group(g, out + (p - first));
    } else {
      alignas(64) float tmp[64];
      group(g, tmp);
      std::memcpy(out + (p - first), tmp + off, size_t(take) * sizeof(float));
    }
    p += take;
  }
}

template <class V>
inline void normal_fill(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                        float std) {
  fill_positions(out, n, first, [&](uint64_t g, float* dst) { normal_group<V>(g, seed, mean, std, dst); });
}

template <class V>
inline void uniform_fill(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                         float span, float cap) {
  fill_positions(out, n, first,
                 [&](uint64_t g, float* dst) { uniform_group<V>(g, seed, lo, span, cap, dst); });
}

}  // namespace
}  // namespace loom::kernels::cpu
