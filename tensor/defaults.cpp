#include "tensor/defaults.h"

#include "core/error.h"

namespace loom {
namespace {
thread_local DType t_dtype = DType::f32;
thread_local Device t_device = Device::cpu();
}  // namespace

DType default_dtype() { return t_dtype; }
Device default_device() { return t_device; }

void set_default_dtype(DType t) {
  if (!is_floating(t))
    throw ValueError(detail::concat("set_default_dtype: ", t,
                                    " is not a floating dtype; use f64, f32, f16 or bf16"));
  t_dtype = t;
}
void set_default_device(Device d) { t_device = d; }

DefaultDTypeGuard::DefaultDTypeGuard(DType t) : saved_(t_dtype) { set_default_dtype(t); }
DefaultDTypeGuard::~DefaultDTypeGuard() { t_dtype = saved_; }
DefaultDeviceGuard::DefaultDeviceGuard(Device d) : saved_(t_device) { t_device = d; }
DefaultDeviceGuard::~DefaultDeviceGuard() { t_device = saved_; }

}  // namespace loom
