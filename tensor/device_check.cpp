#include "tensor/device_check.h"

#include "kernels/cuda_status.h"
#include "tensor/error.h"

namespace loom::native {

void check_cpu(const Tensor& t, const char* op) {
  if (t.defined() && !t.is_cpu())
    throw RuntimeError(detail::concat(op, ": ", t.device(), " tensors need a CUDA backend: ",
                                      kNoCudaBackend));
}

}  // namespace loom::native
