// Autocast: a thread-local switch that mixed precision turns on around forward passes.
//
// While enabled, matmul-like ops (matmul, linear) cast floating inputs to `dtype` (f16 or
// bf16) and run there, while reductions, softmax, norms and losses cast low-precision inputs
// up to f32 (docs/design.md "Precision"). The public ops in autograd/ read this state; kernels
// never do.
#pragma once

#include "core/dtype.h"

namespace loom {

struct AutocastState {
  bool enabled = false;
  DType dtype = DType::bf16;
};

AutocastState autocast_state();

class AutocastGuard {
 public:
  // enabled=false disables autocast inside a region that had it on.
  explicit AutocastGuard(bool enabled, DType dtype = DType::bf16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  AutocastState saved_;
};

}  // namespace loom
