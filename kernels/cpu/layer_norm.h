// Layer normalisation over the last K values of a contiguous (M, K) input, forward and
// backward, with optional elementwise affine weight and bias of K values.
//
//   mean = sum(x) / K,  var = sum((x - mean)^2) / K (two-pass, biased as PyTorch),
//   rstd = 1 / sqrt(var + eps),  xhat = (x - mean) * rstd,  y = xhat * w + b
// Backward, with gh = g * w (or g without weight):
//   gx = rstd * (gh - mean_k(gh) - xhat * mean_k(gh * xhat))
//   gw = sum_m g * xhat,  gb = sum_m g
// 16-bit dtypes compute in f32 and keep mean/rstd in f32 ("stat" dtype: f64 for f64 input,
// f32 otherwise). Not here: shape checks and the reshape to (M, K) (tensor/native_norm.cpp).
//
// Letters: M rows normalised independently, K normalised values per row.
#pragma once

#include <cstdint>

#include "kernels/dispatch.h"
#include "core/dtype.h"

namespace loom::kernels::cpu {

// x, y (M, K) and w, b (K) in the table's dtype; w and b may be null; mean, rstd (M) in the
// stat dtype.
using LayerNormFn = void (*)(const void* x, const void* w, const void* b, void* y, void* mean,
                             void* rstd, int64_t M, int64_t K, double eps);
// grad_out, x, grad_x (M, K) and w (K, may be null) in the table's dtype; mean and rstd (M)
// in the stat dtype; grad_w and grad_b (K, each may be null) in the stat dtype.
using LayerNormBackwardFn = void (*)(const void* grad_out, const void* x, const void* mean,
                                     const void* rstd, const void* w, void* grad_x,
                                     void* grad_w, void* grad_b, int64_t M, int64_t K);

const KernelTable<LayerNormFn>& layer_norm_kernels();
const KernelTable<LayerNormBackwardFn>& layer_norm_backward_kernels();

}  // namespace loom::kernels::cpu
