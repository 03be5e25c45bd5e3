// Softmax and log-softmax kernels (forward and backward) along the middle dim R of a
// contiguous (O, R, I) tensor, plus the row primitives the cross-entropy kernel shares.
//
// Every row subtracts its max before exponentiating, so logits of 1000 stay finite.
// 16-bit floats are computed in f32; exp runs through Eigen's vectorised arrays. Not here:
// dims, layouts and dtype checks (tensor/native_softmax.cpp), and masking.
//
// Letters: O outer rows, R softmax length, I inner rows (I == 1: softmax over the last dim).
#pragma once

#include <cstdint>

#include "kernels/dispatch.h"
#include "core/dtype.h"

namespace loom::kernels::cpu {

// y = softmax(x) (or log_softmax) over n contiguous values; y may alias x.
void softmax_row(const float* x, float* y, int64_t n, bool log);
void softmax_row(const double* x, double* y, int64_t n, bool log);
// log(sum(exp(x - m))) over n >= 1 contiguous values, m = their max (max_contiguous): the
// caller adds m back where it cancels least (cross-entropy uses (m - x_t) + this).
float log_sum_exp_shifted(const float* x, int64_t n, float m);
double log_sum_exp_shifted(const double* x, int64_t n, double m);

// y = softmax(x) or log_softmax(x) along R; x and y are contiguous (O, R, I) of one dtype.
using SoftmaxFn = void (*)(const void* x, void* y, int64_t O, int64_t R, int64_t I, bool log);
// grad_x from grad (of y) and y:  softmax:      gx = y * (g - sum(g * y))
//                                 log_softmax:  gx = g - exp(y) * sum(g)
using SoftmaxBackwardFn = void (*)(const void* grad, const void* y, void* grad_x, int64_t O,
                                   int64_t R, int64_t I, bool log);

const KernelTable<SoftmaxFn>& softmax_kernels();
const KernelTable<SoftmaxBackwardFn>& softmax_backward_kernels();

}  // namespace loom::kernels::cpu
