#include "fabric/accelerator.h"

namespace loom {

int cuda_device_count() {
#ifdef LOOM_WITH_CUDA
  extern int loom_cuda_device_count();  // kernels/cuda/
  return loom_cuda_device_count();
#else
  return 0;
#endif
}

int CUDAAccelerator::device_count() const { return cuda_device_count(); }

}  // namespace loom
