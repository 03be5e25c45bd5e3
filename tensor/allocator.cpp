#include "tensor/allocator.h"

#include <cstdlib>
#include <new>

#include "tensor/error.h"

namespace loom {

MemoryStats Allocator::stats() const {
  return {current_.load(std::memory_order_relaxed), peak_.load(std::memory_order_relaxed),
          allocs_.load(std::memory_order_relaxed)};
}

void Allocator::reset_peak() { peak_.store(current_.load()); }

void Allocator::record_alloc(size_t nbytes) {
  int64_t now = current_.fetch_add(int64_t(nbytes)) + int64_t(nbytes);
  allocs_.fetch_add(1, std::memory_order_relaxed);
  int64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
}

void Allocator::record_free(size_t nbytes) { current_.fetch_sub(int64_t(nbytes)); }

namespace {

// 64-byte alignment: a cache line, and enough for any SIMD load we issue.
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    record_alloc(nbytes);
    return p;
  }
  void deallocate(void* ptr, size_t nbytes) override {
    if (!ptr) return;
    std::free(ptr);
    record_free(nbytes);
  }
};

class MissingAllocator final : public Allocator {
 public:
  void* allocate(size_t) override {
    throw RuntimeError("cuda: loom was built without CUDA; configure with -DLOOM_CUDA=ON");
  }
  void deallocate(void*, size_t) override {}
};

Allocator* g_allocators[3] = {nullptr, nullptr, nullptr};

}  // namespace

Allocator& allocator_for(Device device) {
  static CpuAllocator cpu;
  static MissingAllocator missing;
  switch (device.type) {
    case DeviceType::cpu: return cpu;
    case DeviceType::cuda: return g_allocators[1] ? *g_allocators[1] : missing;
    case DeviceType::meta: break;
  }
  throw Error("meta tensors have no allocator: they never hold bytes (see Note [Meta tensors])");
}

void register_allocator(DeviceType type, Allocator* allocator) {
  g_allocators[static_cast<int>(type)] = allocator;
}

MemoryStats memory_stats(Device device) {
  if (device.is_meta()) return {};
  return allocator_for(device).stats();
}

void reset_peak_memory_stats(Device device) {
  if (!device.is_meta()) allocator_for(device).reset_peak();
}

}  // namespace loom
