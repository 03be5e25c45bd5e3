// The CPU allocator's block cache (Note [CPU block cache]): freed large blocks are reused,
// stats count live tensor bytes only, small blocks bypass the cache, empty_cache() drains it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tensor/allocator.h"
#include "tensor/factories.h"

namespace loom {
namespace {

bool cache_enabled() {
#if defined(__SANITIZE_ADDRESS__)
  return false;
#else
  const char* v = std::getenv("LOOM_CPU_CACHE_MB");
  return !(v && std::string(v) == "0");
#endif
}

TEST(CpuBlockCache, FreedLargeBlockIsReusedAndStatsCountLiveBytesOnly) {
  if (!cache_enabled()) GTEST_SKIP() << "the block cache is off in this build or environment";
  empty_cache();
  const MemoryStats s0 = memory_stats();
  EXPECT_EQ(s0.cached_bytes, 0);
  void* first = nullptr;
  {
    Tensor t = zeros({300 * 1024});  // 1.2 MB: class 1.25 MiB
    first = t.raw_data_ptr();
    EXPECT_EQ(memory_stats().current_bytes - s0.current_bytes, 300 * 1024 * 4);
  }
  const MemoryStats s1 = memory_stats();
  EXPECT_EQ(s1.current_bytes, s0.current_bytes);  // freed for the stats ...
  EXPECT_EQ(s1.cached_bytes, 1280 * 1024);        // ... kept, rounded to its class
  {
    Tensor u = zeros({310 * 1024});  // another request of the same class reuses the block
    EXPECT_EQ(u.raw_data_ptr(), first);
    EXPECT_EQ(memory_stats().cached_bytes, 0);
    EXPECT_EQ(memory_stats().num_allocs, s1.num_allocs + 1);
    EXPECT_EQ(u.sum().item<double>(), 0.0);  // zeros() still writes every element
  }
  empty_cache();
  EXPECT_EQ(memory_stats().cached_bytes, 0);
  EXPECT_EQ(memory_stats().current_bytes, s0.current_bytes);
}

TEST(CpuBlockCache, SmallBlocksAreNotCached) {
  empty_cache();
  { Tensor t = ones({1000}); }  // 4 KB, below the 64 KiB threshold
  EXPECT_EQ(memory_stats().cached_bytes, 0);
}

}  // namespace
}  // namespace loom
