// The f32 layer-norm row routines compiled for AVX-512 (layer_norm_avx512.cpp), called by
// kernels/cpu/layer_norm.cpp for f32 rows when cpu_level() >= avx512. They follow the
// formulas of kernels/cpu/layer_norm.h with 16-lane sums (two accumulators, then a fixed
// lane tree), so a row gives the same bits wherever it lies and whatever the thread count;
// against the baseline's pairwise sums they agree within the layer-norm tolerance of
// tests/kernels/test_layer_norm_avx512.cpp, not bit for bit.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// One row of K values: y = (x - mean) * rstd * w + b (w, b may be null); writes the row's
// mean and rstd.
void layer_norm_row_f32_avx512(const float* x, const float* w, const float* b, float* y,
                               int64_t K, float eps, float* mean, float* rstd);

// One row of the backward: grad_x = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)) with
// gh = g * w (g without weight); adds g * xhat to part_w and g to part_b when they are not
// null (the caller's per-block partial sums of grad_w and grad_b).
void layer_norm_backward_row_f32_avx512(const float* g, const float* x, float mean, float rstd,
                                        const float* w, float* grad_x, float* part_w,
                                        float* part_b, int64_t K);

}  // namespace loom::kernels::cpu
