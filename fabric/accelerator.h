// Accelerators: which kind of device a run uses and how many of them this machine has.
#pragma once

#include <memory>
#include <string>

#include "core/device.h"

namespace loom {

class Accelerator {
 public:
  virtual ~Accelerator() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda"
  virtual bool is_available() const = 0;
  virtual int device_count() const = 0;  // what devices="auto" resolves to
  virtual Device device(int index) const = 0;
};

class CPUAccelerator : public Accelerator {
 public:
  std::string name() const override { return "cpu"; }
  bool is_available() const override { return true; }
  int device_count() const override { return 1; }
  Device device(int) const override { return Device::cpu(); }
};

class CUDAAccelerator : public Accelerator {
 public:
  std::string name() const override { return "cuda"; }
  bool is_available() const override { return device_count() > 0; }
  int device_count() const override;  // 0 on a build without CUDA or a machine without GPUs
  Device device(int index) const override { return Device::cuda(index); }
};

// Number of CUDA devices this process can see (0 without CUDA support or driver).
int cuda_device_count();

}  // namespace loom
