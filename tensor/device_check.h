// The one device check of the ops whose kernels exist only on the CPU so far.
#pragma once

#include "tensor/tensor.h"

namespace loom::native {

// Throws RuntimeError naming `op` and the device when `t` is defined and not a CPU tensor
// (undefined tensors stand for absent optional arguments and pass).
void check_cpu(const Tensor& t, const char* op);

}  // namespace loom::native
