// kernels/cpu/layer_norm_avx512.h, in AVX-512 intrinsics (flags in CMakeLists.txt). Only
// intrinsics and file-local helpers: the object defines no symbol the linker could share
// with the baseline code (tests/check_isa_objects.sh).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC 12's own AVX-512 headers
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "kernels/cpu/layer_norm_avx512.h"

#include <immintrin.h>

#include <cmath>

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kLanes = 16;

// Lanes [0, n) of a block of 16 (n < 16 only at a row's end).
inline __mmask16 head_mask(int64_t n) {
  return n >= kLanes ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
}
// Plain loads and stores but for a row's last, partial vector: masked stores cost several
// times a plain one on some AVX-512 CPUs (AMD Zen 4).
inline __m512 load(const float* p, __mmask16 m) {
  return m == __mmask16(0xffff) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
inline void store(float* p, __mmask16 m, __m512 x) {
  if (m == __mmask16(0xffff))
    _mm512_storeu_ps(p, x);
  else
    _mm512_mask_storeu_ps(p, m, x);
}

// sum over k of f(k's 16-lane block), in two accumulators (even and odd blocks) added at the
// end; masked-out lanes must come back as zero from f.
template <class F>
float row_sum(int64_t K, const F& f) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 2 * kLanes <= K; k += 2 * kLanes) {
    acc0 = _mm512_add_ps(acc0, f(k, __mmask16(0xffff)));
    acc1 = _mm512_add_ps(acc1, f(k + kLanes, __mmask16(0xffff)));
  }
  for (; k < K; k += kLanes) acc0 = _mm512_add_ps(acc0, f(k, head_mask(K - k)));
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

}  // namespace

void layer_norm_row_f32_avx512(const float* x, const float* w, const float* b, float* y,
                               int64_t K, float eps, float* mean, float* rstd) {
  const float mu = row_sum(K, [&](int64_t k, __mmask16 m) { return load(x + k, m); }) / float(K);
  const __m512 vmu = _mm512_set1_ps(mu);
  const float var = row_sum(K, [&](int64_t k, __mmask16 m) {
                      __m512 d = _mm512_maskz_sub_ps(m, load(x + k, m), vmu);
                      return _mm512_mul_ps(d, d);
                    }) / float(K);
  const float rs = 1.0f / std::sqrt(var + eps);
  *mean = mu;
  *rstd = rs;
  const __m512 vrs = _mm512_set1_ps(rs);
  for (int64_t k = 0; k < K; k += kLanes) {
    const __mmask16 m = head_mask(K - k);
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(load(x + k, m), vmu), vrs);
    if (w) v = _mm512_mul_ps(v, load(w + k, m));
    if (b) v = _mm512_add_ps(v, load(b + k, m));
    store(y + k, m, v);
  }
}

void layer_norm_backward_row_f32_avx512(const float* g, const float* x, float mean, float rstd,
                                        const float* w, float* grad_x, float* part_w,
                                        float* part_b, int64_t K) {
  const __m512 vmu = _mm512_set1_ps(mean), vrs = _mm512_set1_ps(rstd);
  auto xhat = [&](int64_t k, __mmask16 m) {
    return _mm512_maskz_mul_ps(m, _mm512_sub_ps(load(x + k, m), vmu), vrs);
  };
  auto gh = [&](int64_t k, __mmask16 m) {
    return w ? _mm512_mul_ps(load(g + k, m), load(w + k, m)) : load(g + k, m);
  };
  if (part_w || part_b)
    for (int64_t k = 0; k < K; k += kLanes) {
      const __mmask16 m = head_mask(K - k);
      const __m512 gv = load(g + k, m);
      if (part_w)
        store(part_w + k, m, _mm512_add_ps(load(part_w + k, m), _mm512_mul_ps(gv, xhat(k, m))));
      if (part_b) store(part_b + k, m, _mm512_add_ps(load(part_b + k, m), gv));
    }
  const float a = row_sum(K, gh) / float(K);
  const float c =
      row_sum(K, [&](int64_t k, __mmask16 m) { return _mm512_mul_ps(gh(k, m), xhat(k, m)); }) /
      float(K);
  const __m512 va = _mm512_set1_ps(a), vc = _mm512_set1_ps(c);
  for (int64_t k = 0; k < K; k += kLanes) {
    const __mmask16 m = head_mask(K - k);
    const __m512 d = _mm512_sub_ps(_mm512_sub_ps(gh(k, m), va), _mm512_mul_ps(xhat(k, m), vc));
    store(grad_x + k, m, _mm512_mul_ps(vrs, d));
  }
}

}  // namespace loom::kernels::cpu
