// kernels/cpu/adam_avx512.h, in AVX-512 intrinsics (flags in CMakeLists.txt). Only intrinsics:
// the object defines no symbol the linker could share with the baseline code
// (tests/check_isa_objects.sh).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC 12's own AVX-512 headers
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "kernels/cpu/adam_avx512.h"

#include <immintrin.h>

namespace loom::kernels::cpu {

void adam_block_f32_avx512(float* param, const float* grad, float* m, float* v, float* vmax,
                           int64_t n, const AdamBlockScalars& s) {
  const __m512 b1 = _mm512_set1_ps(s.beta1), one_b1 = _mm512_set1_ps(1.0f - s.beta1);
  const __m512 b2 = _mm512_set1_ps(s.beta2), one_b2 = _mm512_set1_ps(1.0f - s.beta2);
  const __m512 wd = _mm512_set1_ps(s.weight_decay), decay = _mm512_set1_ps(s.decay);
  const __m512 eps = _mm512_set1_ps(s.eps), step_size = _mm512_set1_ps(s.step_size);
  const __m512 inv_bc2_sqrt = _mm512_set1_ps(s.inv_bc2_sqrt);
  // 16 elements from i; only the block's last, partial vector (k != all ones) is masked:
  // masked stores cost several times a plain one on some AVX-512 CPUs (AMD Zen 4).
  auto update = [&](int64_t i, __mmask16 k) {
    const bool full = k == __mmask16(0xffff);
    auto load = [&](const float* a) {
      return full ? _mm512_loadu_ps(a + i) : _mm512_maskz_loadu_ps(k, a + i);
    };
    auto store = [&](float* a, __m512 x) {
      full ? _mm512_storeu_ps(a + i, x) : _mm512_mask_storeu_ps(a + i, k, x);
    };
    const __m512 p = _mm512_mul_ps(load(param), decay);               // θ (1 - γλ)
    const __m512 g = _mm512_add_ps(load(grad), _mm512_mul_ps(wd, p));  // Adam: g + λ θ
    const __m512 mi = _mm512_add_ps(_mm512_mul_ps(b1, load(m)),
                                    _mm512_mul_ps(one_b1, g));  // m = β1 m + (1 - β1) g
    const __m512 vi = _mm512_add_ps(_mm512_mul_ps(b2, load(v)),
                                    _mm512_mul_ps(_mm512_mul_ps(one_b2, g), g));  // v = β2 v + (1 - β2) g²
    __m512 vhat = vi;
    if (vmax) {  // AMSGrad: v̂ = max(v̂, v)
      vhat = _mm512_max_ps(load(vmax), vi);
      store(vmax, vhat);
    }
    const __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vhat), inv_bc2_sqrt), eps);
    store(m, mi);
    store(v, vi);
    store(param, _mm512_sub_ps(p, _mm512_div_ps(_mm512_mul_ps(step_size, mi), denom)));
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) update(i, __mmask16(0xffff));
  if (i < n) update(i, __mmask16((1u << (n - i)) - 1));
}

}  // namespace loom::kernels::cpu
