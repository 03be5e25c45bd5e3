// kernels/cpu/unary_math.h compiled for AVX-512 (flags in CMakeLists.txt), see unary_avx512.h.
// flatten: every Eigen function these entry points call is inlined into them, so this object
// defines no shared (weak) symbol that the linker could pick for the baseline code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's own AVX-512 headers
#endif
#include "kernels/cpu/unary_avx512.h"

#if defined(__OPTIMIZE__)
#include "kernels/cpu/unary_math.h"
#endif

namespace loom::kernels::cpu {

#if defined(__OPTIMIZE__)

__attribute__((flatten)) void unary_f32_avx512(UnaryKind op, const float* x, float* y, int64_t n) {
  unary_floating_blocks<float>(op, x, y, n);
}

__attribute__((flatten)) void unary_backward_f32_avx512(UnaryKind op, const float* g,
                                                        const float* s, float* y, int64_t n) {
  backward_floating_blocks<float>(op, g, s, y, n);
}

#else  // unoptimised builds inline nothing, flatten or not: no variant (unary_avx512.h)

void unary_f32_avx512(UnaryKind, const float*, float*, int64_t) { __builtin_trap(); }
void unary_backward_f32_avx512(UnaryKind, const float*, const float*, float*, int64_t) {
  __builtin_trap();
}

#endif

}  // namespace loom::kernels::cpu
