#include "tensor/device_check.h"

#include "core/cuda_status.h"
#include "core/error.h"

namespace loom::native {

void check_cpu(const Tensor& t, const char* op) {
  if (t.defined() && !t.is_cpu())
    throw RuntimeError(detail::concat(op, ": ", t.device(), " tensors need a CUDA backend: ",
                                      kNoCudaBackend));
}

}  // namespace loom::native
