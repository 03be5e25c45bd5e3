// The element-wise combinations every loom reduction path uses (the shared-memory segment, the
// direct reduce-scatter over Gloo, the hierarchical all_reduce across nodes), so that a value
// reduced by any of them is the same fold, bit for bit: ((x0 op x1) op x2) ... in rank order.
#pragma once

#include <cstdint>
#include <type_traits>

#include "dist/process_group.h"

namespace loom::dist {

// Integer sums go through the unsigned type: they wrap like Gloo's two's-complement adds,
// without signed-overflow UB.
template <class T>
struct Sum {
  T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      return T(U(a) + U(b));
    } else {
      return a + b;
    }
  }
};
template <class T>
struct Max {
  T operator()(T a, T b) const { return a < b ? b : a; }  // std::max(a, b), as gloo::max
};
template <class T>
struct Min {
  T operator()(T a, T b) const { return b < a ? b : a; }  // std::min(a, b), as gloo::min
};

// acc[i] = acc[i] op src[i] with op's combination (avg combines as sum; the division comes
// once at the end, divide_by in reduce_op.h). acc is the left operand, as in the fold.
template <class T>
void combine_into(T* __restrict acc, const T* __restrict src, int64_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      for (int64_t i = 0; i < n; ++i) acc[i] = Sum<T>{}(acc[i], src[i]);
      break;
    case ReduceOp::max:
      for (int64_t i = 0; i < n; ++i) acc[i] = Max<T>{}(acc[i], src[i]);
      break;
    case ReduceOp::min:
      for (int64_t i = 0; i < n; ++i) acc[i] = Min<T>{}(acc[i], src[i]);
      break;
  }
}

}  // namespace loom::dist
