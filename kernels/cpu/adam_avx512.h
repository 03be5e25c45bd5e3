// The f32 Adam/AdamW block update of optim/adam.cpp compiled for AVX-512 (adam_avx512.cpp),
// called for f32 compute blocks (f32 parameters, and f16/bf16 ones after their conversion)
// when cpu_level() >= avx512. The same formulas in the same order, 16 lanes at a time with a
// correctly rounded sqrt and division; the compilers may fuse a multiply and an add
// differently in the two variants, so they agree within a few ulp per step
// (tests/optim/test_adam_avx512.cpp), not bit for bit.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// The per-step scalars, in f32 as the baseline block computes them.
struct AdamBlockScalars {
  float beta1, beta2, eps;
  float weight_decay;  // Adam's L2 term (0 for AdamW)
  float decay;         // AdamW's 1 - lr * weight_decay (1 for Adam)
  float step_size;     // lr / (1 - beta1^t)
  float inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^t)
};

// n elements: param, exp_avg (m), exp_avg_sq (v) updated in place; vmax (AMSGrad's running
// maximum of v) is null without amsgrad.
void adam_block_f32_avx512(float* param, const float* grad, float* m, float* v, float* vmax,
                           int64_t n, const AdamBlockScalars& s);

}  // namespace loom::kernels::cpu
