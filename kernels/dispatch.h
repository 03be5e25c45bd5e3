// The dispatch table: (op, device, dtype) -> kernel.
//
// Each op family (elementwise, reductions, ...) owns one KernelTable per op, with its own
// function-pointer type, built on first use by a function-local static in the family's source
// that registers the CPU kernels (and the CUDA ones when built with CUDA). Op front-ends in
// tensor/ look kernels up here, so a new backend plugs in without touching them. No static
// initialisers: the linker drops unreferenced objects of a static library, and with them their
// initialisers.
#pragma once

#include <string>
#include <string_view>

#include "core/cuda_status.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace loom::kernels {

inline constexpr int kNumDeviceTypes = 3;
inline constexpr int kNumDTypes = 8;

template <class Fn>
class KernelTable {
 public:
  void set(DeviceType device, DType dtype, Fn fn) {
    table_[static_cast<int>(device)][static_cast<int>(dtype)] = fn;
  }
  bool has(DeviceType device, DType dtype) const {
    return table_[static_cast<int>(device)][static_cast<int>(dtype)] != nullptr;
  }
  // Throws ValueError naming the op, dtype and device when no kernel is registered.
  Fn get(DeviceType device, DType dtype, std::string_view op) const {
    Fn fn = table_[static_cast<int>(device)][static_cast<int>(dtype)];
    if (!fn) [[unlikely]]
      throw ValueError(detail::concat(op, ": not implemented for dtype ", dtype, " on ",
                                      Device(device).str(), device == DeviceType::cuda
                                          ? std::string(" (") + kNoCudaBackend + ")"
                                          : std::string()));
    return fn;
  }

 private:
  Fn table_[kNumDeviceTypes][kNumDTypes] = {};
};

}  // namespace loom::kernels
