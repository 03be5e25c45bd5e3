#include "tensor/storage.h"

#include "core/error.h"

namespace loom {

Storage::Storage(size_t nbytes, Device device, bool lazy) : nbytes_(nbytes), device_(device) {
  if (!lazy && !device.is_meta()) materialize();
}

Storage::~Storage() {
  if (void* p = data_.load()) allocator_for(device_).deallocate(p, nbytes_);
}

void* Storage::data() const {
  void* p = data_.load(std::memory_order_acquire);
  return p ? p : materialize();
}

void Storage::release(Refusal refusal) {
  if (void* p = data_.exchange(nullptr)) allocator_for(device_).deallocate(p, nbytes_);
  refusal_ = std::make_unique<Refusal>(std::move(refusal));
}

void Storage::reacquire() {
  refusal_.reset();
  materialize();
}

void* Storage::materialize() const {
  if (refusal_) throw RuntimeError((*refusal_)(-1));
  if (device_.is_meta())
    throw RuntimeError("cannot access the data of a meta storage: meta tensors hold no bytes");
  if (nbytes_ == 0) return nullptr;
  void* fresh = allocator_for(device_).allocate(nbytes_);
  void* expected = nullptr;
  // Two threads may race to materialise; the loser frees its bytes.
  if (!data_.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) {
    allocator_for(device_).deallocate(fresh, nbytes_);
    return expected;
  }
  return fresh;
}

}  // namespace loom
