// AVX-512 variants of the compute-bound f32 unary kernels (kernels/cpu/unary_math.h compiled
// for AVX-512 in unary_avx512.cpp), called only when cpu_level() >= avx512. Measured on one
// thread over 32K L2-resident floats (AVX2 -> AVX-512): exp 0.37 -> 0.11 ns per value, tanh
// 0.23 -> 0.11, gelu (tanh form) 0.40 -> 0.20, erf 0.21 -> 0.11. Eigen's AVX-512 exp, tanh and
// erf are other approximations than its AVX2 ones: results agree within a few ulp, not bit
// for bit (tests/kernels/test_unary_avx512.cpp states the bound). The memory-bound ops (neg,
// abs, relu, square, sqrt, the backward products) gain nothing and keep one variant.
#pragma once

#include <cstdint>

#include "kernels/cpu/elementwise.h"

namespace loom::kernels::cpu {

// Only in optimised builds: without inlining, the AVX-512 object would define Eigen functions
// out of line that the linker may share with the baseline code (tests/check_isa_objects.sh).
#if defined(__OPTIMIZE__)
inline constexpr bool kUnaryAvx512Built = true;
#else
inline constexpr bool kUnaryAvx512Built = false;
#endif

constexpr bool has_avx512_variant(UnaryKind op) {
  return kUnaryAvx512Built && (op == UnaryKind::exp || op == UnaryKind::log || op == UnaryKind::tanh ||
         op == UnaryKind::sigmoid || op == UnaryKind::gelu_tanh || op == UnaryKind::gelu_erf);
}
constexpr bool has_avx512_backward_variant(UnaryKind op) {
  return kUnaryAvx512Built && (op == UnaryKind::gelu_tanh || op == UnaryKind::gelu_erf);
}

void unary_f32_avx512(UnaryKind op, const float* x, float* y, int64_t n);
void unary_backward_f32_avx512(UnaryKind op, const float* g, const float* s, float* y, int64_t n);

}  // namespace loom::kernels::cpu
