// The f32 softmax row routines (kernels/cpu/softmax_math.h) compiled for AVX-512 in
// softmax_avx512.cpp, called only when cpu_level() >= avx512: exp is most of a softmax row and
// Eigen's AVX-512 exp is 3.4x its AVX2 one on cache-resident data (kernels/cpu/unary_avx512.h).
// Results agree with the AVX2 build within the softmax tolerance of the tests, not bit for bit
// (another exp approximation and 16-lane partial sums).
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// Only in optimised builds (see kernels/cpu/unary_avx512.h).
#if defined(__OPTIMIZE__)
inline constexpr bool kSoftmaxAvx512Built = true;
#else
inline constexpr bool kSoftmaxAvx512Built = false;
#endif

void softmax_row_f32_avx512(const float* x, float* y, int64_t n, bool log);
float sum_exp_shifted_f32_avx512(const float* x, int64_t n, float m);

}  // namespace loom::kernels::cpu
