// Storage and the allocators (tensor/storage.h, tensor/allocator.h): lazy allocation measured
// through memory_stats, freeing, peak tracking, meta tensors that cost nothing and refuse
// data access, byte-count overflow, storage shared by views and the version counter.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/storage.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

int64_t current() { return memory_stats().current_bytes; }
int64_t peak() { return memory_stats().peak_bytes; }

TEST(Storage, EmptyAllocatesOnFirstDataAccessOnly) {
  reset_peak_memory_stats();
  int64_t before = current(), peak_before = peak();
  {
    Tensor t = empty({1024, 1024});
    EXPECT_EQ(t.nbytes(), size_t(1024) * 1024 * 4);
    EXPECT_FALSE(t.is_materialized());
    EXPECT_EQ(current(), before);
    EXPECT_EQ(peak(), peak_before);
    // Views and metadata queries do not allocate either.
    Tensor v = t.view({-1}).narrow(0, 10, 100);
    EXPECT_EQ(v.numel(), 100);
    EXPECT_EQ(current(), before);

    float* p = t.data_ptr<float>();
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(t.is_materialized());
    EXPECT_TRUE(v.is_materialized());  // the view shares the storage
    EXPECT_EQ(current(), before + int64_t(t.nbytes()));
    EXPECT_EQ(peak(), before + int64_t(t.nbytes()));
    EXPECT_EQ(t.data_ptr<float>(), p);  // allocated once
    EXPECT_EQ(v.data_ptr<float>(), p + 10);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);  // cache-line aligned
    EXPECT_EQ(current(), before + int64_t(t.nbytes()));
  }
  EXPECT_EQ(current(), before);  // freed with the last handle
  EXPECT_EQ(peak(), before + 1024 * 1024 * 4);
  reset_peak_memory_stats();
  EXPECT_EQ(peak(), current());
}

TEST(Storage, CountsRequestedBytesAndAllocations) {
  int64_t before = current(), allocs = memory_stats().num_allocs;
  Tensor t = zeros({3}, DType::u8);  // 3 bytes requested (64 reserved for alignment)
  EXPECT_EQ(current(), before + 3);
  EXPECT_EQ(memory_stats().num_allocs, allocs + 1);
  t = Tensor();
  EXPECT_EQ(current(), before);
}

TEST(Storage, PeakTracksTheHighWaterMark) {
  reset_peak_memory_stats();
  int64_t base = current();
  {
    Tensor a = zeros({1000});  // 4000 bytes
    Tensor b = zeros({500});   // 2000 bytes
    EXPECT_EQ(peak(), base + 6000);
  }
  Tensor c = zeros({100});
  EXPECT_EQ(current(), base + 400);
  EXPECT_EQ(peak(), base + 6000);
  reset_peak_memory_stats();
  EXPECT_EQ(peak(), base + 400);
}

TEST(Storage, FactoriesThatWriteAllocate) {
  int64_t before = current();
  Tensor z = zeros({256});
  EXPECT_TRUE(z.is_materialized());
  EXPECT_EQ(current(), before + 1024);
  Tensor o = ones({256}, DType::f64);
  EXPECT_EQ(current(), before + 1024 + 2048);
}

TEST(Storage, MetaTensorOfABillionElementsCostsNothing) {
  reset_peak_memory_stats();
  int64_t before = current(), peak_before = peak(), allocs = memory_stats().num_allocs;
  Tensor t = empty({1000000000}, DType::f32, Device::meta());
  EXPECT_TRUE(t.is_meta());
  EXPECT_EQ(t.nbytes(), size_t(4000000000));
  EXPECT_EQ(t.storage()->nbytes(), size_t(4000000000));
  Tensor z = zeros({1000000000}, DType::f32, Device::meta());
  Tensor v = z.view({1000, 1000000}).t();
  EXPECT_EQ(current(), before);
  EXPECT_EQ(peak(), peak_before);
  EXPECT_EQ(memory_stats().num_allocs, allocs);
  EXPECT_FALSE(t.is_materialized());
  EXPECT_EQ(memory_stats(Device::meta()).current_bytes, 0);
  try {
    (void)t.data_ptr<float>();
    FAIL() << "reading a meta tensor's data must throw";
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("[1000000000]"));
    EXPECT_THAT(e.what(), HasSubstr("meta"));
  }
  EXPECT_THROW((void)v.raw_data_ptr(), RuntimeError);
  EXPECT_THROW((void)t.storage()->data(), RuntimeError);
  EXPECT_EQ(current(), before);
}

TEST(Storage, ByteCountOverflowIsAValueError) {
  // The element count itself overflows int64.
  EXPECT_THROW(empty({int64_t(1) << 62, 4}), ValueError);
  try {
    empty({int64_t(1) << 32, int64_t(1) << 32});
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("[4294967296, 4294967296]"));
  }
  // The elements fit but their bytes do not (2^62 * 8 = 2^65), on meta too.
  try {
    empty({int64_t(1) << 62}, DType::f64, Device::meta());
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("[4611686018427387904]"));
    EXPECT_THAT(e.what(), HasSubstr("overflow"));
  }
  EXPECT_THROW(empty({-1, 3}), ValueError);
}

TEST(Storage, ZeroSizedTensorsHoldNoBytes) {
  int64_t before = current();
  Tensor t = zeros({0, 5});
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.nbytes(), 0u);
  EXPECT_NO_THROW((void)t.raw_data_ptr());
  EXPECT_EQ(current(), before);
}

TEST(Storage, DirectUseEagerLazyAndMeta) {
  int64_t before = current();
  {
    Storage eager(128, Device::cpu(), /*lazy=*/false);
    EXPECT_TRUE(eager.is_materialized());
    EXPECT_EQ(current(), before + 128);
    Storage lazy(64, Device::cpu());
    EXPECT_FALSE(lazy.is_materialized());
    EXPECT_EQ(current(), before + 128);
    EXPECT_NE(lazy.data(), nullptr);
    EXPECT_EQ(current(), before + 192);
    Storage meta(1 << 30, Device::meta(), /*lazy=*/false);  // never allocates
    EXPECT_FALSE(meta.is_materialized());
    EXPECT_THROW(meta.data(), RuntimeError);
    EXPECT_EQ(current(), before + 192);
  }
  EXPECT_EQ(current(), before);
  EXPECT_THROW(allocator_for(Device::cuda(0)).allocate(16), RuntimeError);
}

TEST(Storage, ConcurrentFirstAccessAllocatesOnce) {
  for (int round = 0; round < 20; ++round) {
    int64_t before = current();
    Storage s(4096, Device::cpu());
    std::vector<void*> seen(8);
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) threads.emplace_back([&, i] { seen[size_t(i)] = s.data(); });
    for (auto& t : threads) t.join();
    for (void* p : seen) EXPECT_EQ(p, seen[0]);
    EXPECT_EQ(current(), before + 4096);  // losers of the race gave their bytes back
  }
}

TEST(Storage, ViewsShareOneStorage) {
  Tensor t = zeros({4, 6});
  Tensor views[] = {t.view({24}), t.t(), t[1], t.narrow(1, 2, 3), t.unsqueeze(0), t.reshape({6, 4}),
                    t.expand({2, 4, 6}), t.detach()};
  for (const Tensor& v : views) EXPECT_EQ(v.storage(), t.storage());
  EXPECT_NE(t.clone().storage(), t.storage());
  EXPECT_NE(t.t().reshape({24}).storage(), t.storage());  // needs a copy
  views[2].fill_(5.0);
  EXPECT_EQ(t.at<float>({1, 3}), 5.0f);
  EXPECT_EQ(t.at<float>({0, 3}), 0.0f);
}

TEST(Storage, VersionCounterBumpsOnEveryInPlaceWriteThroughAnyView) {
  Tensor t = zeros({3, 4});
  Tensor v = t[1];
  uint64_t v0 = t.version();
  t.copy_(ones({4}));
  EXPECT_EQ(t.version(), v0 + 1);
  v.fill_(2.0);
  EXPECT_EQ(t.version(), v0 + 2);
  EXPECT_EQ(v.version(), t.version());  // one counter per storage
  t.add_(ones({3, 4}));
  EXPECT_EQ(t.version(), v0 + 3);
  v.mul_(2.0);
  EXPECT_EQ(t.version(), v0 + 4);
  t.zero_();
  EXPECT_EQ(t.version(), v0 + 5);
  t.t().uniform_(0, 1);
  EXPECT_EQ(t.version(), v0 + 6);
  t.normal_();
  t.clamp_(0.0, 1.0);
  t.div_(3.0);
  t.sub_(ones({4}));
  EXPECT_EQ(t.version(), v0 + 10);
  // Reads and out-of-place ops leave it alone.
  (void)t.to_double_vector();
  (void)(t + t);
  (void)t.clone();
  EXPECT_EQ(t.version(), v0 + 10);
  // A clone has a counter of its own.
  Tensor c = t.clone();
  uint64_t c0 = c.version();
  t.fill_(1.0);
  EXPECT_EQ(c.version(), c0);
}

}  // namespace
}  // namespace loom
