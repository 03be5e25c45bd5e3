// Helpers for the optimizers' fused CPU loops: one pass over raw parameter, gradient and
// state pointers per parameter, instead of one pass per tensor op (a plain Adam step is ~10
// tensor ops, each reading and writing whole tensors).
//
// Elements are loaded into the compute type (f64 for f64 parameters, f32 otherwise, so f16 /
// bf16 parameters round once per element rather than after every op) and stored back. This
// is not a kernel family with a dispatch table: only the optimizers use it, on the CPU.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"
#include "tensor/dtype.h"
#include "tensor/error.h"

namespace loom::optim::fused {

// Elements per parallel chunk: an optimizer step does a few flops per element, so chunks
// below this cost more to hand out than to run.
constexpr int64_t kFusedGrain = 1 << 15;

// f64 computes in f64; f32, f16 and bf16 compute in f32.
template <class T>
using ComputeType = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Calls fn(T{}) for a floating dtype (T = double, float, Half or BFloat16).
template <class Fn>
void visit_floating(DType dtype, const char* op, Fn&& fn) {
  LOOM_CHECK(is_floating(dtype), op, ": fused update needs a floating dtype, got ", dtype);
  visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float> ||
                  std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>)
      fn(tag);
  });
}

// Runs body(i) for i in [0, n), split across the thread pool for large parameters.
template <class Body>
void for_each_element(int64_t n, const Body& body) {
  kernels::parallel_for(0, n, kFusedGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

}  // namespace loom::optim::fused
