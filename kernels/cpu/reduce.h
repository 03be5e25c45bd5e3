// Reduction kernels (sum, mean, var, amax/amin, max/min along a dim) and the accurate
// vectorisable sum that the softmax, loss and norm kernels share.
//
// Every reduction kernel sees a contiguous input viewed as (O, R, I) and reduces the middle
// dim R, writing O*I contiguous outputs in (O, I) order. The front-end (tensor/
// native_reduce.cpp) gets any reduction into that form: a contiguous input whose reduced
// dims form one block maps onto it directly, anything else is permuted (reduced dims last)
// and made contiguous first, giving I == 1. Deliberately not here: dim handling, dtype
// promotion and output casts (the front-end's job), and a strided-input path (one copy of
// a non-contiguous input is cheaper than a strided reduction of it).
//
// Letters: O outer outputs, R reduced length, I inner outputs.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <type_traits>

#include "kernels/dispatch.h"
#include "core/dtype.h"

namespace loom::kernels::cpu {

// Accurate sum of f(0) + ... + f(n-1) for f32/f64 Acc, written so that g++ -O3 vectorises
// it without -ffast-math: kLanes independent accumulators run over leaf blocks of at most
// kLeaf values (each lane sums kLeaf / kLanes terms in order), and leaves are combined
// pairwise, as numpy does. The error grows like (kLeaf / kLanes + log2 n) ulp instead of n.
template <class Acc, class F>
Acc pairwise_sum_range(int64_t begin, int64_t n, const F& f) {
  constexpr int64_t kLeaf = 2048;
  constexpr int kLanes = 128 / int(sizeof(Acc));  // four 256-bit vectors hide add latency
  if (n > kLeaf) {
    // Split on a lane multiple so that both halves stay lane-aligned.
    int64_t half = ((n / 2 + kLanes - 1) / kLanes) * kLanes;
    return pairwise_sum_range<Acc>(begin, half, f) +
           pairwise_sum_range<Acc>(begin + half, n - half, f);
  }
  Acc acc[kLanes] = {};
  int64_t i = begin, end = begin + n;
  for (; i + kLanes <= end; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += f(i + j);
  Acc tail = 0;
  for (; i < end; ++i) tail += f(i);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0] + tail;
}

template <class Acc, class F>
Acc pairwise_sum(int64_t n, const F& f) {
  return pairwise_sum_range<Acc>(0, n, f);
}

template <class Acc>
Acc sum_contiguous(const Acc* x, int64_t n) {
  return pairwise_sum<Acc>(n, [x](int64_t i) { return x[i]; });
}

// Largest (smallest) value of a contiguous run (n >= 1); a NaN anywhere makes the result
// NaN. f32/f64 go through Eigen's PropagateNaN reductions (vmaxps + a NaN blend): g++ does
// not vectorise a NaN-aware select loop without -ffast-math, whatever its form. Other types
// (integers, bool) use the plain loop, which has no NaN to care about.
template <bool kMax, class T>
T extremum_contiguous(const T* x, int64_t n) {
  if constexpr (std::is_floating_point_v<T>) {
    Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> a(x, n);
    if constexpr (kMax)
      return a.template maxCoeff<Eigen::PropagateNaN>();
    else
      return a.template minCoeff<Eigen::PropagateNaN>();
  } else {
    T m = x[0];
    for (int64_t i = 1; i < n; ++i) m = (kMax ? x[i] > m : x[i] < m) ? x[i] : m;
    return m;
  }
}

template <class T>
T max_contiguous(const T* x, int64_t n) {
  return extremum_contiguous<true>(x, n);
}

// The dtype sums accumulate and are returned in: f64 -> f64; f32/f16/bf16 -> f32; integers
// and bool -> i64 (as PyTorch). mean and var use the floating ones.
constexpr DType sum_acc_dtype(DType t) {
  return t == DType::f64 ? DType::f64 : is_floating(t) ? DType::f32 : DType::i64;
}

// out[o, i] = scale * sum_r x[o, r, i]; out has dtype sum_acc_dtype(x's dtype).
using SumFn = void (*)(const void* x, void* out, int64_t O, int64_t R, int64_t I, double scale);
// out[o, i] = sum_r (x[o, r, i] - mean)^2 / max(0, R - correction), two-pass; floating x
// only; out has dtype sum_acc_dtype(x's dtype).
using VarFn = void (*)(const void* x, void* out, int64_t O, int64_t R, int64_t I,
                       int64_t correction);
// out[o, i] = max_r (or min_r) x[o, r, i] in x's dtype; NaN propagates; R >= 1.
using ExtremumFn = void (*)(const void* x, void* out, int64_t O, int64_t R, int64_t I);
// values[o, i] (x's dtype, may be null) and indices[o, i] of the max (or min) along R; the
// first index wins ties, and the first NaN wins over everything; R >= 1.
using ArgExtremumFn = void (*)(const void* x, void* values, int64_t* indices, int64_t O,
                               int64_t R, int64_t I);

const KernelTable<SumFn>& sum_kernels();
const KernelTable<VarFn>& var_kernels();
const KernelTable<ExtremumFn>& amax_kernels();
const KernelTable<ExtremumFn>& amin_kernels();
const KernelTable<ArgExtremumFn>& max_dim_kernels();
const KernelTable<ArgExtremumFn>& min_dim_kernels();

}  // namespace loom::kernels::cpu
