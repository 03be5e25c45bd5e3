// The Philox fills on 16 AVX-512 lanes (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -ffp-contract=off, see CMakeLists.txt; called only when cpu_level() >= avx512).
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports the _mm512_undefined_epi32() inside its own masked intrinsics as
// maybe-uninitialized once they are inlined (a false positive of its headers).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/cpu/philox_impl.h"
#include "kernels/cpu/philox_variants.h"

namespace loom::kernels::cpu {
namespace {

struct V512 {
  using I = __m512i;
  using F = __m512;
  static I set1(uint32_t x) { return _mm512_set1_epi32(int(x)); }
  static I iota(uint32_t b) {
    return _mm512_add_epi32(set1(b), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                       13, 14, 15));
  }
  static I add(I a, I b) { return _mm512_add_epi32(a, b); }
  static I sub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I xor_(I a, I b) { return _mm512_xor_si512(a, b); }
  static I and_(I a, I b) { return _mm512_and_si512(a, b); }
  static I or_(I a, I b) { return _mm512_or_si512(a, b); }
  static I andnot(I a, I b) { return _mm512_andnot_si512(a, b); }
  template <int N> static I shr(I a) { return _mm512_srli_epi32(a, N); }
  template <int N> static I sra(I a) { return _mm512_srai_epi32(a, N); }
  template <int N> static I shl(I a) { return _mm512_slli_epi32(a, N); }
  static void mulhilo(I a, uint32_t m, I& hi, I& lo) {
    const I vm = set1(m);
    lo = _mm512_mullo_epi32(a, vm);
    const I even = _mm512_mul_epu32(a, vm);                         // lanes 0, 2, ... as 64 bits
    const I odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), vm);  // lanes 1, 3, ...
    hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  }
  static F fset1(float x) { return _mm512_set1_ps(x); }
  static F fadd(F a, F b) { return _mm512_add_ps(a, b); }
  static F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F ffma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fsqrt(F a) { return _mm512_sqrt_ps(a); }
  static F fmin(F a, F b) { return _mm512_min_ps(a, b); }
  static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
  static I bits(F a) { return _mm512_castps_si512(a); }
  static F from_bits(I a) { return _mm512_castsi512_ps(a); }
  static void store(float* p, F a) { _mm512_storeu_ps(p, a); }
};

}  // namespace

void philox_normal_f32_avx512(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                              float std) {
  normal_fill<V512>(out, n, seed, first, mean, std);
}

void philox_uniform_f32_avx512(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                               float span, float cap) {
  uniform_fill<V512>(out, n, seed, first, lo, span, cap);
}

}  // namespace loom::kernels::cpu
