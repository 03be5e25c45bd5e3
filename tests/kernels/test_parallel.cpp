// parallel_for (kernels/cpu/parallel.h): every index of [begin, end) covered exactly once for
// many sizes and grains, chunk counts bounded by the thread count and the grain, nested calls
// run serially in the caller, exceptions from any chunk reach the caller, and the pool keeps
// working after an exception and after a resize.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/threads_guard.h"
#include "core/error.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

// The chunks one call makes, in the order they finished.
std::vector<std::pair<int64_t, int64_t>> chunks_of(int64_t begin, int64_t end, int64_t grain) {
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> out;
  kernels::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    out.emplace_back(b, e);
  });
  return out;
}

TEST(ParallelFor, CoversTheRangeExactlyOnce) {
  ThreadsGuard restore;
  for (int threads : {1, 2, 3, 8}) {
    set_num_threads(threads);
    for (int64_t begin : {int64_t(0), int64_t(-7), int64_t(1000)})
      for (int64_t n : {0, 1, 2, 3, 7, 64, 1000, 4099, 100003})
        for (int64_t grain : {0, 1, 3, 64, 1000, 1 << 20}) {
          std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
          kernels::parallel_for(begin, begin + n, grain, [&](int64_t b, int64_t e) {
            ASSERT_LE(begin, b);
            ASSERT_LT(b, e);
            ASSERT_LE(e, begin + n);
            for (int64_t i = b; i < e; ++i) hits[size_t(i - begin)].fetch_add(1);
          });
          for (int64_t i = 0; i < n; ++i)
            ASSERT_EQ(hits[size_t(i)].load(), 1) << "threads " << threads << " n " << n << " grain "
                                                 << grain << " index " << i;
        }
  }
}

TEST(ParallelFor, EmptyAndReversedRangesCallNothing) {
  int calls = 0;
  kernels::parallel_for(5, 5, 1, [&](int64_t, int64_t) { ++calls; });
  kernels::parallel_for(10, 3, 1, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

TEST(ParallelFor, ChunkCountFollowsThreadsAndGrain) {
  ThreadsGuard restore;
  set_num_threads(1);
  EXPECT_EQ(get_num_threads(), 1);
  EXPECT_EQ(chunks_of(0, 100000, 1).size(), 1u);
  set_num_threads(4);
  EXPECT_EQ(get_num_threads(), 4);
  EXPECT_EQ(chunks_of(0, 100000, 1).size(), 4u);
  EXPECT_EQ(chunks_of(0, 100000, 40000).size(), 3u);  // ceil(100000 / 40000) chunks of >= grain
  EXPECT_EQ(chunks_of(0, 100000, 100000).size(), 1u);  // n <= grain: one call, in the caller
  EXPECT_EQ(chunks_of(0, 3, 1).size(), 3u);
  for (auto [b, e] : chunks_of(0, 100000, 30000)) EXPECT_GE(e - b, 25000);  // even split
  set_num_threads(2);
  EXPECT_EQ(chunks_of(0, 100000, 1).size(), 2u);
  set_num_threads(0);  // clamped to 1
  EXPECT_EQ(get_num_threads(), 1);
}

TEST(ParallelFor, RunsOnSeveralThreads) {
  ThreadsGuard restore;
  set_num_threads(2);
  std::mutex mu;
  std::set<std::thread::id> ids;
  std::atomic<int> arrived{0};
  kernels::parallel_for(0, 2, 1, [&](int64_t, int64_t) {
    {
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(std::this_thread::get_id());
    }
    // Both chunks wait for each other: this only finishes if they run concurrently.
    arrived.fetch_add(1);
    while (arrived.load() < 2) std::this_thread::yield();
  });
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_TRUE(ids.count(std::this_thread::get_id()));  // the caller takes a chunk
}

TEST(ParallelFor, NestedCallsRunSeriallyInTheCaller) {
  ThreadsGuard restore;
  set_num_threads(4);
  std::atomic<int> inner_calls{0};
  std::atomic<int64_t> total{0};
  std::atomic<bool> foreign_thread{false};
  kernels::parallel_for(0, 4, 1, [&](int64_t b, int64_t e) {
    std::thread::id me = std::this_thread::get_id();
    for (int64_t i = b; i < e; ++i)
      kernels::parallel_for(0, 1000, 1, [&](int64_t ib, int64_t ie) {
        inner_calls.fetch_add(1);
        if (std::this_thread::get_id() != me) foreign_thread = true;
        total.fetch_add(ie - ib);
      });
  });
  EXPECT_EQ(inner_calls.load(), 4);  // one serial call per outer index
  EXPECT_EQ(total.load(), 4000);
  EXPECT_FALSE(foreign_thread.load());
}

TEST(ParallelFor, ExceptionsPropagateFromAnyChunk) {
  ThreadsGuard restore;
  set_num_threads(4);
  for (int64_t bad_chunk = 0; bad_chunk < 4; ++bad_chunk) {
    std::atomic<int> finished{0};
    try {
      kernels::parallel_for(0, 4000, 1, [&](int64_t b, int64_t) {
        if (b / 1000 == bad_chunk) throw std::invalid_argument("chunk " + std::to_string(bad_chunk));
        finished.fetch_add(1);
      });
      FAIL() << "no exception from chunk " << bad_chunk;
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()), "chunk " + std::to_string(bad_chunk));
    }
    EXPECT_EQ(finished.load(), 3);  // the other chunks ran to completion before the rethrow
  }
  // The serial path throws too, and the pool still works afterwards.
  EXPECT_THROW(kernels::parallel_for(0, 10, 100, [](int64_t, int64_t) { throw std::runtime_error("x"); }),
               std::runtime_error);
  std::atomic<int64_t> sum{0};
  kernels::parallel_for(0, 10000, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
  });
  EXPECT_EQ(sum.load(), 10000 * 9999 / 2);
}

TEST(ParallelFor, ConcurrentCallersShareThePool) {
  ThreadsGuard restore;
  set_num_threads(2);
  (void)get_num_threads();  // build the pool before the callers race for it
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        kernels::parallel_for(0, 1000, 10, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(total.load(), 4 * 50 * 1000);
}

// ---- LOOM_NUM_THREADS ----

// The message parse_num_threads throws for `value` ("" when it accepts it).
std::string refusal_of(const char* value) {
  try {
    (void)parse_num_threads(value);
  } catch (const ValueError& e) {
    return e.what();
  }
  return "";
}

TEST(NumThreadsEnv, AcceptsPositiveIntegersAndTreatsUnsetAsEveryCore) {
  EXPECT_EQ(parse_num_threads(nullptr), std::nullopt);
  EXPECT_EQ(parse_num_threads(""), std::nullopt);
  EXPECT_EQ(parse_num_threads("1"), 1);
  EXPECT_EQ(parse_num_threads("3"), 3);
  EXPECT_EQ(parse_num_threads("64"), 64);
}

TEST(NumThreadsEnv, RefusesAnythingButAPositiveIntegerNamingTheVariableAndValue) {
  for (const char* bad : {"abc", "0", "-1", "3x", "x3", " 2", "2 ", "+2", "1.5", "0x4",
                          "99999999999999999999"}) {
    std::string message = refusal_of(bad);
    EXPECT_THAT(message, HasSubstr(std::string("LOOM_NUM_THREADS='") + bad + "' is invalid"))
        << "value '" << bad << "'";
    EXPECT_THAT(message, HasSubstr("must be a positive integer"));
    EXPECT_THAT(message, HasSubstr("unset it to use every core"));
  }
}

// Run by NumThreadsEnv.AFreshProcessRefusesABadValue in a child process (skipped otherwise):
// the first get_num_threads() of a process reads LOOM_NUM_THREADS.
TEST(NumThreadsEnv, ProbeChild) {
  if (!std::getenv("LOOM_NUM_THREADS_PROBE"))
    GTEST_SKIP() << "runs only as a child of another test";
  try {
    std::printf("threads %d\n", get_num_threads());
  } catch (const ValueError& e) {
    std::printf("error %s\n", e.what());
  }
}

// What a fresh copy of this binary prints from ProbeChild under LOOM_NUM_THREADS=value.
std::string probe(const std::string& value) {
  std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string command = "LOOM_NUM_THREADS_PROBE=1 LOOM_NUM_THREADS='" + value + "' timeout 60 '" +
                        exe + "' --gtest_filter=NumThreadsEnv.ProbeChild 2>&1";
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return "popen failed";
  char buf[512];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  ::pclose(pipe);
  return out;
}

TEST(NumThreadsEnv, AFreshProcessRefusesABadValue) {
  EXPECT_THAT(probe("3"), HasSubstr("threads 3\n"));
  for (const char* bad : {"abc", "0", "-1", "3x"})
    EXPECT_THAT(probe(bad), HasSubstr(std::string("error LOOM_NUM_THREADS='") + bad +
                                      "' is invalid: it must be a positive integer"));
}

}  // namespace
}  // namespace loom
