// The loops of a binary elementwise op over one contiguous run: one loop per broadcast pattern
// (each operand advancing by one element or held at its first), so that every loop has strides
// known at compile time and vectorises. binary.cpp runs them for every dtype, and
// streaming_avx512.cpp compiles the same loops for AVX-512 (its f32 arithmetic).
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// out[i] = f(a[a_steps ? i : 0], b[b_steps ? i : 0]) for i < n.
template <class C, class OC, class F>
inline void binary_loops(const C* a, bool a_steps, const C* b, bool b_steps, OC* out, int64_t n,
                         F f) {
  if (a_steps && b_steps) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else if (a_steps) {
    const C bv = b[0];
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], bv);
  } else if (b_steps) {
    const C av = a[0];
    for (int64_t i = 0; i < n; ++i) out[i] = f(av, b[i]);
  } else {
    const OC v = f(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) out[i] = v;
  }
}

}  // namespace loom::kernels::cpu
