// The softmax row routines of kernels/cpu/softmax.cpp in Eigen arrays, included by
// softmax.cpp (the build's baseline ISA) and by softmax_avx512.cpp (compiled for AVX-512, its
// entry points flattened as in kernels/cpu/unary_avx512.cpp). In an anonymous namespace:
// each including file has its own copy.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/eigen_blocks.h"
#include "kernels/cpu/reduce.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kBlock = 1024;     // exp(x - max) evaluated per stack block for sums

template <class C>
using Arr = Eigen::Array<C, Eigen::Dynamic, 1>;
template <class C>
using Map = Eigen::Map<Arr<C>>;
template <class C>
using CMap = Eigen::Map<const Arr<C>>;

// The sum of n contiguous values: loom's pairwise sum (reduce.h) in the baseline build. The
// AVX-512 build (kFlatSum) cannot use it (it recurses, so it would not inline into a flattened
// entry point and would stay a shared symbol) nor Eigen's sum (whose order follows the data's
// alignment, which differs between pool threads' buffers): it adds in 8 double lanes in index
// order, then the lanes as a fixed tree; the same bits wherever the row lies.
template <bool kFlatSum, class C>
C row_sum(const C* p, int64_t n) {
  if constexpr (kFlatSum) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int l = 0; l < 8; ++l) lane[l] += double(p[i + l]);
    for (int l = 0; i < n; ++i, ++l) lane[l] += double(p[i]);
    return C(((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])));
  } else {
    return sum_contiguous(p, n);
  }
}

// sum(exp(x - m)) over n values, a stack block at a time (x itself is left untouched).
template <class C, bool kFlatSum = false>
C sum_exp_shifted(const C* x, int64_t n, C m) {
  C buf[kBlock];
  C s = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    int64_t len = std::min(kBlock, n - b);
    exp_shifted_into(x + b, m, buf, len);
    s += row_sum<kFlatSum>(buf, len);
  }
  return s;
}

template <class C, bool kFlatSum = false>
void softmax_row_impl(const C* x, C* y, int64_t n, bool log) {
  if (n == 0) return;
  C m = max_contiguous(x, n);
  if (log) {
    C lse = std::log(sum_exp_shifted<C, kFlatSum>(x, n, m));
    Map<C>(y, n) = (CMap<C>(x, n) - m) - lse;
  } else {
    exp_shifted_into(x, m, y, n);
    C s = row_sum<kFlatSum>(y, n);
    Map<C>(y, n) *= C(1) / s;
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
