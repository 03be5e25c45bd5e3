// The per-instruction-set entry points of the Philox fills (kernels/cpu/philox.h picks one by
// cpu_level()); each is defined in its own translation unit, compiled for its ISA.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

void philox_normal_f32_avx512(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                              float std);
void philox_uniform_f32_avx512(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                               float span, float cap);
void philox_normal_f32_avx2(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                            float std);
void philox_uniform_f32_avx2(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                             float span, float cap);
void philox_normal_f32_scalar(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                              float std);
void philox_uniform_f32_scalar(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                               float span, float cap);

}  // namespace loom::kernels::cpu
