// Thread-local defaults used by factories when not told: dtype (f32) and device (cpu).
// Each is changed for a scope through an RAII guard that restores the previous value even
// when an exception passes through (Fabric's init_module stacks these).
#pragma once

#include "core/device.h"
#include "core/dtype.h"

namespace loom {

DType default_dtype();
Device default_device();
void set_default_dtype(DType t);   // floating dtypes only; throws ValueError otherwise
void set_default_device(Device d);

class DefaultDTypeGuard {
 public:
  explicit DefaultDTypeGuard(DType t);
  ~DefaultDTypeGuard();
  DefaultDTypeGuard(const DefaultDTypeGuard&) = delete;
  DefaultDTypeGuard& operator=(const DefaultDTypeGuard&) = delete;

 private:
  DType saved_;
};

class DefaultDeviceGuard {
 public:
  explicit DefaultDeviceGuard(Device d);
  ~DefaultDeviceGuard();
  DefaultDeviceGuard(const DefaultDeviceGuard&) = delete;
  DefaultDeviceGuard& operator=(const DefaultDeviceGuard&) = delete;

 private:
  Device saved_;
};

}  // namespace loom
