#include "tensor/allocator.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "core/cuda_status.h"
#include "core/error.h"
#include "kernels/cpu/parallel.h"

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
// Fresh blocks of kMinPopulatedBlock and more are populated for writing before they are
// handed out (Note [First touch]).
constexpr size_t kMinPopulatedBlock = size_t(4) << 20;
constexpr size_t kPopulateChunk = size_t(2) << 20;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels answer EINVAL and nothing happens
#endif

// Note [First touch]: a fresh block's pages are faulted in with MADV_POPULATE_WRITE, in 2 MiB
// chunks over the pool's threads, instead of one trap per 4 KiB page at the first write. A
// normal init of 4 GB (bench_init_module) spends most of its time in the kernel's page work,
// and on these VMs that work costs 1.7 s per 4 GB of 4 KiB pages touched one by one, 1.3 s
// populated in chunks, and half that on two threads. It is advice: where the kernel refuses,
// the first write faults the pages in as before.
// Not huge pages: on these VMs the host takes back free 2 MiB blocks (virtio-balloon free
// page reporting), and a transparent huge page is carved from exactly such a block, so its
// first touch costs 2.6-4.6 ms per 2 MiB in host faults: 4 GB took 8-10 s instead of 1.7 s
// with 4 KiB pages, which come from smaller free blocks the host keeps. Measured with a
// 4 GB memset in a fresh process after 5 s idle; docs/design.md "First touch".
void populate_for_write(void* p, size_t bytes) {
  auto* base = static_cast<char*>(p);
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const int64_t chunks = int64_t((bytes + kPopulateChunk - 1) / kPopulateChunk);
  kernels::parallel_for(0, chunks, 2, [&](int64_t b, int64_t e) {
    const uintptr_t lo = uintptr_t(base + size_t(b) * kPopulateChunk) & ~(page - 1);
    const uintptr_t hi = uintptr_t(base + std::min(bytes, size_t(e) * kPopulateChunk));
    (void)::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE);
  });
}

void* system_alloc(size_t bytes) {
  void* p = std::aligned_alloc(64, bytes);
  if (p && bytes >= kMinPopulatedBlock) populate_for_write(p, bytes);
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
