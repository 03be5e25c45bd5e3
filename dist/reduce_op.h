// What the backends share about a ReduceOp: its name (in fingerprints and error messages)
// and the final step of avg, which every backend reduces as a sum first.
#pragma once

#include <cstdint>
#include <type_traits>

#include "dist/process_group.h"

namespace loom::dist {

const char* reduce_op_name(ReduceOp op);

// avg after the sum: floats multiply by 1 / n (one rounding, the same on every rank);
// integers divide flooring toward negative infinity (as Python's //), so avg of {-1, 0} is -1.
template <class T>
void divide_by(T* data, int64_t numel, int64_t n) {
  if constexpr (std::is_floating_point_v<T>) {
    const T inv = T(1) / T(n);
    for (int64_t i = 0; i < numel; ++i) data[i] *= inv;
  } else {
    const T d = T(n);
    for (int64_t i = 0; i < numel; ++i) {
      T q = data[i] / d;
      if ((data[i] % d != 0) && ((data[i] < 0) != (d < 0))) --q;
      data[i] = q;
    }
  }
}

}  // namespace loom::dist
