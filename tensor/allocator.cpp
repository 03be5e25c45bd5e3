#include "tensor/allocator.h"

#include <pthread.h>
#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "core/cuda_status.h"
#include "core/error.h"

namespace loom {

MemoryStats Allocator::stats() const {
  return {current_.load(std::memory_order_relaxed), peak_.load(std::memory_order_relaxed),
          allocs_.load(std::memory_order_relaxed), cached_.load(std::memory_order_relaxed)};
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

void Allocator::record_cached(int64_t delta) { cached_.fetch_add(delta, std::memory_order_relaxed); }

namespace {

constexpr size_t kMinCachedBlock = size_t(64) << 10;
constexpr size_t kDefaultCacheLimit = size_t(1) << 30;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// The bytes actually allocated for a request: 64-byte multiples below kMinCachedBlock, above
// it the next of four classes per power of two (2^k, 1.25, 1.5, 1.75 x 2^k), so that a block
// serves every request of its class and rounding wastes at most a quarter.
// Blocks of kMinHugeBlock and more start on a 2 MiB boundary and ask the kernel for
// transparent huge pages (madvise, the mode these machines' kernels run THP in): first
// touching a 4 GB model then takes ~2,000 page faults instead of ~1,000,000, which is most of
// a normal init's time once the fill itself runs at memory speed (kernels/cpu/philox.h).
// Advisory only: where the kernel declines, the block is an ordinary one.
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kMinHugeBlock = size_t(8) << 20;

void* system_alloc(size_t bytes) {
  if (bytes < kMinHugeBlock) return std::aligned_alloc(64, bytes);
  void* p = std::aligned_alloc(kHugePage, (bytes + kHugePage - 1) / kHugePage * kHugePage);
  if (p) (void)::madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

size_t block_size(size_t nbytes) {
  if (nbytes < kMinCachedBlock) return (nbytes + 63) / 64 * 64;
  size_t top = size_t(1) << (63 - __builtin_clzll(nbytes));
  size_t step = top / 4;
  return (nbytes + step - 1) / step * step;
}

size_t cache_limit_from_env() {
  if (kSanitized) return 0;
  const char* v = std::getenv("LOOM_CPU_CACHE_MB");
  if (!v || !*v) return kDefaultCacheLimit;
  char* end = nullptr;
  unsigned long long mb = std::strtoull(v, &end, 10);
  if (*end != '\0')
    throw ValueError(detail::concat("LOOM_CPU_CACHE_MB must be a whole number of MiB, got '", v, "'"));
  return size_t(mb) << 20;
}

// 64-byte alignment: a cache line, and enough for any SIMD load we issue. Blocks of
// kMinCachedBlock and more go through the cache of Note [CPU block cache]. The one instance
// is never destroyed (tensors in other statics may free into it during exit), and its lock
// is held across fork() so that a child never inherits it locked by a thread it lacks.
class CpuAllocator final : public Allocator {
 public:
  CpuAllocator() : limit_(cache_limit_from_env()) {}

  static CpuAllocator& instance() {
    static CpuAllocator* a = [] {
      auto* p = new CpuAllocator();
      pthread_atfork([] { instance().mu_.lock(); }, [] { instance().mu_.unlock(); },
                     [] { instance().mu_.unlock(); });
      return p;
    }();
    return *a;
  }

  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const size_t bytes = block_size(nbytes);
    if (bytes >= kMinCachedBlock && limit_ > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= bytes;
        record_cached(-int64_t(bytes));
        record_alloc(nbytes);
        return p;
      }
    }
    void* p = system_alloc(bytes);
    if (!p) {  // the cache may hold what the system lacks
      empty_cache();
      p = system_alloc(bytes);
    }
    if (!p) throw std::bad_alloc();
    record_alloc(nbytes);
    return p;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    if (!ptr) return;
    record_free(nbytes);
    const size_t bytes = block_size(nbytes);
    if (bytes >= kMinCachedBlock) {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + bytes <= limit_) {
        free_[bytes].push_back(ptr);
        cached_ += bytes;
        record_cached(int64_t(bytes));
        return;
      }
    }
    std::free(ptr);
  }

  void empty_cache() override {
    std::map<size_t, std::vector<void*>> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
      record_cached(-int64_t(cached_));
      cached_ = 0;
    }
    for (auto& [size, list] : blocks)
      for (void* p : list) std::free(p);
  }

 private:
  const size_t limit_;
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // block size -> free blocks of that size
  size_t cached_ = 0;
};

class MissingAllocator final : public Allocator {
 public:
  void* allocate(size_t) override {
    throw RuntimeError(std::string("cuda: cannot allocate CUDA memory: ") + kNoCudaBackend);
  }
  void deallocate(void*, size_t) override {}
};

Allocator* g_allocators[3] = {nullptr, nullptr, nullptr};

}  // namespace

Allocator& allocator_for(Device device) {
  static MissingAllocator missing;
  switch (device.type) {
    case DeviceType::cpu: return CpuAllocator::instance();
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

void empty_cache(Device device) {
  if (!device.is_meta()) allocator_for(device).empty_cache();
}

}  // namespace loom
