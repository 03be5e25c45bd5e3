// Strided iteration for CPU kernels: walks K operands of the same logical shape, calling an
// inner loop over the last dimension with raw byte pointers and byte strides, like the loops
// of PyTorch's TensorIterator. Sizes and strides come in as plain arrays: kernels never see
// tensors.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "tensor/error.h"
#include "tensor/half.h"

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

// Calls loop(ptrs, inner_strides, n) for every run along the innermost dim. ptrs are byte
// pointers of the K operands at the run's start; strides are in bytes. Dims of size 1 and
// dims that can be merged with their inner neighbour (for all operands) are collapsed first,
// so a contiguous tensor is one run.
template <int K, class Loop>
void for_each_strided(int64_t ndim, const int64_t* sizes, char* const* base,
                      const int64_t* const* strides, Loop&& loop) {
  constexpr int kMaxDims = 16;
  int64_t sz[kMaxDims];
  int64_t st[K][kMaxDims];
  for (int64_t i = 0; i < ndim; ++i)
    if (sizes[i] == 0) return;
  int d = 0;
  // Collapse from the innermost dim outwards.
  for (int64_t i = ndim - 1; i >= 0; --i) {
    if (sizes[i] == 1) continue;
    if (d > 0) {
      bool mergeable = true;
      for (int k = 0; k < K; ++k)
        if (strides[k][i] != st[k][d - 1] * sz[d - 1]) mergeable = false;
      if (mergeable) {
        sz[d - 1] *= sizes[i];
        continue;
      }
    }
    if (d == kMaxDims)
      throw ValueError(detail::concat("strided copy supports at most ", kMaxDims,
                                      " dims that cannot be merged; reshape the tensor first"));
    sz[d] = sizes[i];
    for (int k = 0; k < K; ++k) st[k][d] = strides[k][i];
    ++d;
  }
  if (d == 0) {  // a single element
    sz[0] = 1;
    for (int k = 0; k < K; ++k) st[k][0] = 0;
    d = 1;
  }
  // sz[0] is now the innermost run; iterate the rest with a counter.
  int64_t inner[K];
  for (int k = 0; k < K; ++k) inner[k] = st[k][0];
  int64_t counter[kMaxDims] = {};
  char* ptrs[K];
  for (int k = 0; k < K; ++k) ptrs[k] = base[k];
  for (;;) {
    loop(ptrs, inner, sz[0]);
    int j = 1;
    for (; j < d; ++j) {
      ++counter[j];
      for (int k = 0; k < K; ++k) ptrs[k] += st[k][j];
      if (counter[j] < sz[j]) break;
      for (int k = 0; k < K; ++k) ptrs[k] -= st[k][j] * sz[j];
      counter[j] = 0;
    }
    if (j == d) return;
  }
}

}  // namespace loom::kernels
