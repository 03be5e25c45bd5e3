// Storage: the bytes behind one or more tensors (views share one Storage).
//
// Invariants: a Storage uniquely owns its pointer. A lazy Storage allocates on the first
// call to data(), so building a model and then sharding or overwriting it costs no memory
// until something reads or writes; is_materialized() tells. A meta Storage never allocates
// (Note [Meta tensors]). The version counter is shared by all views and is bumped by every
// in-place write; autograd uses it to catch a saved tensor modified before backward.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "tensor/allocator.h"
#include "tensor/device.h"

namespace loom {

class Storage {
 public:
  // lazy=false allocates now; lazy=true on first data() access.
  Storage(size_t nbytes, Device device, bool lazy = true);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  bool is_materialized() const { return data_.load(std::memory_order_acquire) != nullptr; }

  // The bytes, allocated on first access. Throws on meta.
  void* data() const;

  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void* materialize() const;

  size_t nbytes_;
  Device device_;
  mutable std::atomic<void*> data_{nullptr};
  std::atomic<uint64_t> version_{0};
};

}  // namespace loom
