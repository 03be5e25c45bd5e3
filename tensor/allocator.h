// Allocators: one per device type, each counting current and peak bytes.
//
// Note [CPU block cache]: the CPU allocator keeps freed blocks of 64 KiB and more in free
// lists by size class (four classes per power of two) and hands them out again, up to 1 GiB
// held (LOOM_CPU_CACHE_MB overrides the cap; 0 turns the cache off). Without it every large
// tensor of a training step comes from mmap and goes back to the OS when freed, so each step
// pays a page fault per 4 KiB of every fresh activation and gradient. Stats count the bytes
// of live tensors only; cached_bytes tells what the cache holds on top, and empty_cache()
// gives it back. Sanitizer builds never cache (a reused block would hide use-after-free).
//
// Note [Meta tensors]: meta is a device whose allocator is never asked for bytes. A meta
// Storage records its size only, so a 1e9-element meta tensor costs a few dozen bytes of
// metadata. Kernels never see meta tensors: op front-ends stop after shape inference.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/device.h"

namespace loom {

struct MemoryStats {
  int64_t current_bytes = 0;  // bytes held right now
  int64_t peak_bytes = 0;     // high-water mark since start or the last reset
  int64_t num_allocs = 0;     // allocations served since start
  int64_t cached_bytes = 0;   // freed blocks kept for reuse, not counted in current_bytes
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  // Returns cached free blocks to the system (Note [CPU block cache]); a no-op by default.
  virtual void empty_cache() {}
  MemoryStats stats() const;
  void reset_peak();

 protected:
  void record_alloc(size_t nbytes);
  void record_free(size_t nbytes);
  void record_cached(int64_t delta);

 private:
  std::atomic<int64_t> current_{0}, peak_{0}, allocs_{0}, cached_{0};
};

// The allocator for a device type. cuda throws unless the CUDA backend registered one.
Allocator& allocator_for(Device device);
// Lets a backend (kernels/cuda) install its allocator at start-up.
void register_allocator(DeviceType type, Allocator* allocator);

MemoryStats memory_stats(Device device = Device::cpu());
void reset_peak_memory_stats(Device device = Device::cpu());
// Frees the blocks the device's allocator caches (Note [CPU block cache]); tensors still
// alive are untouched.
void empty_cache(Device device = Device::cpu());

}  // namespace loom
