// Helpers for the optimizers' fused CPU loops: one pass over raw parameter, gradient and
// state pointers per block of elements, instead of one pass per tensor op (a plain Adam step
// is ~10 tensor ops, each reading and writing whole tensors).
//
// Elements are processed in blocks of kBlock in the compute type (f64 for f64 parameters,
// f32 otherwise). f32/f64 blocks are the data itself; f16/bf16 blocks are converted into a
// stack buffer and written back, so those parameters round once per step rather than after
// every op, and no whole-tensor temporary is made. This is not a kernel family with a
// dispatch table: only the optimizers use it, on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"
#include "core/dtype.h"
#include "core/error.h"

namespace loom::optim::fused {

// Elements per parallel chunk: an optimizer step does a few flops per element, so chunks
// below this cost more to hand out than to run.
constexpr int64_t kFusedGrain = 1 << 15;
// Elements per block: a few stack buffers of this many f32/f64 stay in L1.
constexpr int64_t kBlock = 1024;

// f64 computes in f64; f32, f16 and bf16 compute in f32.
template <class T>
using ComputeType = std::conditional_t<std::is_same_v<std::remove_const_t<T>, double>, double, float>;

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

// Runs fn(begin, length) over blocks of at most kBlock elements covering [0, n); large
// parameters are split across the thread pool.
template <class Fn>
void for_each_block(int64_t n, const Fn& fn) {
  kernels::parallel_for(0, n, kFusedGrain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += kBlock) fn(b, std::min(kBlock, end - b));
  });
}

// A block of T elements seen as ComputeType<T>: the data itself when the types agree, else
// a converted copy that write_back() stores (T may be const for read-only operands).
template <class T>
class Block {
  using C = ComputeType<T>;
  static constexpr bool kDirect = std::is_same_v<std::remove_const_t<T>, C>;

 public:
  Block(T* data, int64_t len) : data_(data), len_(len) {
    if constexpr (kDirect) {
      ptr_ = data;
    } else {
      for (int64_t i = 0; i < len; ++i) buf_[i] = kernels::elem_cast<C>(data[i]);
      ptr_ = buf_;
    }
  }
  auto* get() const { return ptr_; }
  void write_back() {
    if constexpr (!kDirect && !std::is_const_v<T>)
      for (int64_t i = 0; i < len_; ++i) data_[i] = kernels::elem_cast<T>(buf_[i]);
  }

 private:
  T* data_;
  int64_t len_;
  std::conditional_t<kDirect, T*, C*> ptr_;
  // Zeroed so that no compiler sees a read of uninitialised memory past len (4 KiB, and only
  // for f16/bf16, whose conversion costs more anyway).
  std::conditional_t<kDirect, char, C[kBlock]> buf_{};
};

}  // namespace loom::optim::fused
