// Fused cross-entropy from logits: forward per-position losses and the backward, as one
// pass over each position's C logits (no softmax tensor in between).
//
// Logits are a contiguous (N, C, D) tensor (D = d1 * d2 ... for (N, C, d1, ...) inputs, 1 for
// (N, C)); targets are N * D i64 class indices already checked to be in [0, C) or equal to
// ignore_index (the front-end validates them, so kernels never throw). With label smoothing
// eps the loss of one position is
//   (1 - eps) * (lse - x_t) + eps * mean_c(lse - x_c),   lse = log(sum_c exp(x_c))
// and ignored positions give 0 loss and 0 gradient. Not here: the mean/sum reduction and the
// count of non-ignored targets (tensor/native_loss.cpp).
#pragma once

#include <cstdint>

#include "kernels/dispatch.h"
#include "core/dtype.h"

namespace loom::kernels::cpu {

// loss[n * D + d] for every position, in f64 for f64 logits and f32 otherwise.
using CrossEntropyFn = void (*)(const void* logits, const int64_t* target, void* loss, int64_t N,
                                int64_t C, int64_t D, int64_t ignore_index, double eps);
// grad_logits (logits' dtype) = g * (softmax - (1 - eps) * onehot(t) - eps / C), where g is
// grad[(n * D + d) * grad_stride] (f64 for f64 logits, f32 otherwise; stride 0 broadcasts
// one value, as for the mean and sum reductions).
using CrossEntropyBackwardFn = void (*)(const void* logits, const int64_t* target,
                                        const void* grad, int64_t grad_stride, void* grad_logits,
                                        int64_t N, int64_t C, int64_t D, int64_t ignore_index,
                                        double eps);

const KernelTable<CrossEntropyFn>& cross_entropy_kernels();
const KernelTable<CrossEntropyBackwardFn>& cross_entropy_backward_kernels();

}  // namespace loom::kernels::cpu
