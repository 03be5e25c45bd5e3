// kernels/cpu/softmax_math.h compiled for AVX-512 (flags in CMakeLists.txt), see
// softmax_avx512.h; flattened entry points, as in kernels/cpu/unary_avx512.cpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's own AVX-512 headers
#endif
#include "kernels/cpu/softmax_avx512.h"

#if defined(__OPTIMIZE__)
#include "kernels/cpu/softmax_math.h"
#endif

namespace loom::kernels::cpu {

#if defined(__OPTIMIZE__)

__attribute__((flatten)) void softmax_row_f32_avx512(const float* x, float* y, int64_t n,
                                                     bool log) {
  softmax_row_impl<float, true>(x, y, n, log);
}

__attribute__((flatten)) float sum_exp_shifted_f32_avx512(const float* x, int64_t n, float m) {
  return sum_exp_shifted<float, true>(x, n, m);
}

#else  // no variant in unoptimised builds (softmax_avx512.h)

void softmax_row_f32_avx512(const float*, float*, int64_t, bool) { __builtin_trap(); }
float sum_exp_shifted_f32_avx512(const float*, int64_t, float) { __builtin_trap(); }

#endif

}  // namespace loom::kernels::cpu
