// Strided iteration for CPU kernels: walks K operands of the same logical shape, calling an
// inner loop over the last dimension with raw byte pointers and byte strides, like the loops
// of PyTorch's TensorIterator. Sizes and strides come in as plain arrays: kernels never see
// tensors.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "core/half.h"

namespace loom::kernels {

// Converts one element between C++ element types, 16-bit floats and bool included.
template <class To, class From>
inline To elem_cast(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<From, Half>) {
    return elem_cast<To>(f16_to_f32(v.bits));
  } else if constexpr (std::is_same_v<From, BFloat16>) {
    return elem_cast<To>(bf16_to_f32(v.bits));
  } else if constexpr (std::is_same_v<To, Half>) {
    return Half{f32_to_f16(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<To, BFloat16>) {
    return BFloat16{f32_to_bf16(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else {
    return static_cast<To>(v);
  }
}

// The dims of K operands of one logical shape with size-1 dims dropped and each dim merged
// into its inner neighbour where every operand's strides allow it: sz[0] and st[k][0] are
// the innermost dim. A contiguous tensor becomes one dim; a single element one dim of size 1.
// empty: some size is 0.
inline constexpr int kMaxStridedDims = 16;

template <int K>
struct CollapsedDims {
  int ndim = 0;
  bool empty = false;
  int64_t sz[kMaxStridedDims];
  int64_t st[K][kMaxStridedDims];
};

template <int K>
CollapsedDims<K> collapse_dims(int64_t ndim, const int64_t* sizes, const int64_t* const* strides) {
  CollapsedDims<K> c;
  for (int64_t i = 0; i < ndim; ++i)
    if (sizes[i] == 0) c.empty = true;
  if (c.empty) return c;
  int& d = c.ndim;
  for (int64_t i = ndim - 1; i >= 0; --i) {
    if (sizes[i] == 1) continue;
    if (d > 0) {
      bool mergeable = true;
      for (int k = 0; k < K; ++k)
        if (strides[k][i] != c.st[k][d - 1] * c.sz[d - 1]) mergeable = false;
      if (mergeable) {
        c.sz[d - 1] *= sizes[i];
        continue;
      }
    }
    if (d == kMaxStridedDims)
      throw ValueError(detail::concat("strided copy supports at most ", kMaxStridedDims,
                                      " dims that cannot be merged; reshape the tensor first"));
    c.sz[d] = sizes[i];
    for (int k = 0; k < K; ++k) c.st[k][d] = strides[k][i];
    ++d;
  }
  if (d == 0) {  // a single element
    c.sz[0] = 1;
    for (int k = 0; k < K; ++k) c.st[k][0] = 0;
    d = 1;
  }
  return c;
}

// Calls fn(ptrs) at every index of dims [first, c.ndim) of c, skipping dims skip_a and
// skip_b (pass -1 for none); ptrs are the K operands' byte pointers there.
template <int K, class Fn>
void for_each_outer(const CollapsedDims<K>& c, char* const* base, int first, int skip_a,
                    int skip_b, Fn&& fn) {
  int64_t counter[kMaxStridedDims] = {};
  char* ptrs[K];
  for (int k = 0; k < K; ++k) ptrs[k] = base[k];
  for (;;) {
    fn(ptrs);
    int j = first;
    for (; j < c.ndim; ++j) {
      if (j == skip_a || j == skip_b) continue;
      ++counter[j];
      for (int k = 0; k < K; ++k) ptrs[k] += c.st[k][j];
      if (counter[j] < c.sz[j]) break;
      for (int k = 0; k < K; ++k) ptrs[k] -= c.st[k][j] * c.sz[j];
      counter[j] = 0;
    }
    if (j == c.ndim) return;
  }
}

// Calls loop(ptrs, inner_strides, n) for every run along the innermost dim of already
// collapsed dims. ptrs are byte pointers of the K operands at the run's start; strides are in
// bytes. A contiguous tensor is one run.
template <int K, class Loop>
void for_each_strided(const CollapsedDims<K>& c, char* const* base, Loop&& loop) {
  if (c.empty) return;
  int64_t inner[K];
  for (int k = 0; k < K; ++k) inner[k] = c.st[k][0];
  for_each_outer<K>(c, base, 1, -1, -1, [&](char** ptrs) { loop(ptrs, inner, c.sz[0]); });
}

// The same over dims not yet collapsed (collapse_dims first).
template <int K, class Loop>
void for_each_strided(int64_t ndim, const int64_t* sizes, char* const* base,
                      const int64_t* const* strides, Loop&& loop) {
  for_each_strided<K>(collapse_dims<K>(ndim, sizes, strides), base, loop);
}

}  // namespace loom::kernels
