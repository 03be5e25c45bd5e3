// The Philox fills on 16 lanes held in two AVX2 registers (compiled with -mavx2 -mfma
// -ffp-contract=off, see CMakeLists.txt; called only when the CPU has AVX2 and FMA).
#include <immintrin.h>

#include "kernels/cpu/philox_impl.h"
#include "kernels/cpu/philox_variants.h"

namespace loom::kernels::cpu {
namespace {

struct V256x2 {
  struct I {
    __m256i h[2];
  };
  struct F {
    __m256 h[2];
  };
  template <class Op>
  static I map(I a, I b, Op op) {
    return {{op(a.h[0], b.h[0]), op(a.h[1], b.h[1])}};
  }
  template <class Op>
  static F fmap(F a, F b, Op op) {
    return {{op(a.h[0], b.h[0]), op(a.h[1], b.h[1])}};
  }
  static I set1(uint32_t x) { return {{_mm256_set1_epi32(int(x)), _mm256_set1_epi32(int(x))}}; }
  static I iota(uint32_t b) {
    const __m256i v = _mm256_add_epi32(_mm256_set1_epi32(int(b)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return {{v, _mm256_add_epi32(v, _mm256_set1_epi32(8))}};
  }
  static I add(I a, I b) { return map(a, b, [](__m256i x, __m256i y) { return _mm256_add_epi32(x, y); }); }
  static I sub(I a, I b) { return map(a, b, [](__m256i x, __m256i y) { return _mm256_sub_epi32(x, y); }); }
  static I xor_(I a, I b) { return map(a, b, [](__m256i x, __m256i y) { return _mm256_xor_si256(x, y); }); }
  static I and_(I a, I b) { return map(a, b, [](__m256i x, __m256i y) { return _mm256_and_si256(x, y); }); }
  static I or_(I a, I b) { return map(a, b, [](__m256i x, __m256i y) { return _mm256_or_si256(x, y); }); }
  static I andnot(I a, I b) { return map(a, b, [](__m256i x, __m256i y) { return _mm256_andnot_si256(x, y); }); }
  template <int N> static I shr(I a) { return {{_mm256_srli_epi32(a.h[0], N), _mm256_srli_epi32(a.h[1], N)}}; }
  template <int N> static I sra(I a) { return {{_mm256_srai_epi32(a.h[0], N), _mm256_srai_epi32(a.h[1], N)}}; }
  template <int N> static I shl(I a) { return {{_mm256_slli_epi32(a.h[0], N), _mm256_slli_epi32(a.h[1], N)}}; }
  static void mulhilo(I a, uint32_t m, I& hi, I& lo) {
    const __m256i vm = _mm256_set1_epi32(int(m));
    for (int i = 0; i < 2; ++i) {
      lo.h[i] = _mm256_mullo_epi32(a.h[i], vm);
      const __m256i even = _mm256_mul_epu32(a.h[i], vm);
      const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a.h[i], 32), vm);
      hi.h[i] = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    }
  }
  static F fset1(float x) { return {{_mm256_set1_ps(x), _mm256_set1_ps(x)}}; }
  static F fadd(F a, F b) { return fmap(a, b, [](__m256 x, __m256 y) { return _mm256_add_ps(x, y); }); }
  static F fmul(F a, F b) { return fmap(a, b, [](__m256 x, __m256 y) { return _mm256_mul_ps(x, y); }); }
  static F fmin(F a, F b) { return fmap(a, b, [](__m256 x, __m256 y) { return _mm256_min_ps(x, y); }); }
  static F ffma(F a, F b, F c) {
    return {{_mm256_fmadd_ps(a.h[0], b.h[0], c.h[0]), _mm256_fmadd_ps(a.h[1], b.h[1], c.h[1])}};
  }
  static F fsqrt(F a) { return {{_mm256_sqrt_ps(a.h[0]), _mm256_sqrt_ps(a.h[1])}}; }
  static F cvt(I a) { return {{_mm256_cvtepi32_ps(a.h[0]), _mm256_cvtepi32_ps(a.h[1])}}; }
  static I bits(F a) { return {{_mm256_castps_si256(a.h[0]), _mm256_castps_si256(a.h[1])}}; }
  static F from_bits(I a) { return {{_mm256_castsi256_ps(a.h[0]), _mm256_castsi256_ps(a.h[1])}}; }
  static void store(float* p, F a) {
    _mm256_storeu_ps(p, a.h[0]);
    _mm256_storeu_ps(p + 8, a.h[1]);
  }
};

}  // namespace

void philox_normal_f32_avx2(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                            float std) {
  normal_fill<V256x2>(out, n, seed, first, mean, std);
}

void philox_uniform_f32_avx2(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                             float span, float cap) {
  uniform_fill<V256x2>(out, n, seed, first, lo, span, cap);
}

}  // namespace loom::kernels::cpu
