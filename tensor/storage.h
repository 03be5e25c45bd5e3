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
#include <functional>
#include <memory>
#include <string>

#include "tensor/allocator.h"
#include "core/device.h"

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
  // For a write that puts back the bytes the storage held at `version` (FSDP's re-gather of
  // the same shards for backward): tensors saved for backward at that version stay valid.
  void restore_version(uint64_t version) { version_.store(version, std::memory_order_relaxed); }

  // Sharding (fabric/fsdp_unit.h): release() frees the bytes and makes every later data()
  // throw RuntimeError(refusal(offset)) until reacquire(), which allocates again (contents
  // undefined). `offset` is the element offset of the view that asked (-1 when unknown), so
  // the message can name the parameter there. The Storage object, its views and its version
  // stay, so tensors saved for backward see the bytes a later gather writes. Neither call
  // may race with data() on another thread.
  using Refusal = std::function<std::string(int64_t offset)>;
  void release(Refusal refusal);
  void reacquire();
  bool is_released() const { return refusal_ != nullptr; }
  std::string refusal(int64_t offset) const { return refusal_ ? (*refusal_)(offset) : ""; }

 private:
  void* materialize() const;

  size_t nbytes_;
  Device device_;
  mutable std::atomic<void*> data_{nullptr};
  std::atomic<uint64_t> version_{0};
  std::unique_ptr<Refusal> refusal_;  // set while released
};

}  // namespace loom
