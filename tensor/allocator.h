// Allocators: one per device type, each counting current and peak bytes.
//
// Note [Meta tensors]: meta is a device whose allocator is never asked for bytes. A meta
// Storage records its size only, so a 1e9-element meta tensor costs a few dozen bytes of
// metadata. Kernels never see meta tensors: op front-ends stop after shape inference.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "tensor/device.h"

namespace loom {

struct MemoryStats {
  int64_t current_bytes = 0;  // bytes held right now
  int64_t peak_bytes = 0;     // high-water mark since start or the last reset
  int64_t num_allocs = 0;     // allocations served since start
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  MemoryStats stats() const;
  void reset_peak();

 protected:
  void record_alloc(size_t nbytes);
  void record_free(size_t nbytes);

 private:
  std::atomic<int64_t> current_{0}, peak_{0}, allocs_{0};
};

// The allocator for a device type. cuda throws unless the CUDA backend registered one.
Allocator& allocator_for(Device device);
// Lets a backend (kernels/cuda) install its allocator at start-up.
void register_allocator(DeviceType type, Allocator* allocator);

MemoryStats memory_stats(Device device = Device::cpu());
void reset_peak_memory_stats(Device device = Device::cpu());

}  // namespace loom
