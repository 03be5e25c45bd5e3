// AVX-512 variants of the f32 streaming kernels: add, sub, mul and div over unit or broadcast
// strides (binary.cpp's BinaryBlock) and the contiguous pairwise sum (reduce.h), compiled for
// AVX-512 in streaming_avx512.cpp and called only when cpu_level() >= avx512. The same source
// at another vector width: results are bit for bit those of the AVX2 build (IEEE arithmetic
// per element; the sum keeps its 32 lanes and its combining order, two zmm instead of four
// ymm). They pay only on cache-resident data. By CPU time on one thread (AMD EPYC, Zen 4,
// busy machine), AVX2 -> AVX-512: add of 4K floats 238 -> 159 ns, of 32K and 256K the same;
// sum of 4K floats 291 -> 271 ns, 32K 1142 -> 951, 256K 9283 -> 7931; 16M (DRAM) the same
// (`LOOM_CPU_CAPABILITY=avx2 build/ci/bench/bench_elementwise --benchmark_filter=cached`
// against the default, and bench_reduce --benchmark_filter=Cached).
#pragma once

#include <cstdint>

#include "kernels/cpu/elementwise.h"

namespace loom::kernels::cpu {

constexpr bool has_streaming_avx512_variant(BinaryKind op) {
  return op == BinaryKind::add || op == BinaryKind::sub || op == BinaryKind::mul ||
         op == BinaryKind::div;
}

// out[i] = a[i * step_a] op b[i * step_b] for i < n; steps are 0 (broadcast) or 1, and op is
// one of has_streaming_avx512_variant's.
void binary_f32_avx512(BinaryKind op, const float* a, int64_t step_a, const float* b,
                       int64_t step_b, float* out, int64_t n);

// sum_contiguous(x, n) of reduce.h, bit for bit.
float sum_f32_avx512(const float* x, int64_t n);

}  // namespace loom::kernels::cpu
