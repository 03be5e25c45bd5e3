// The shared-memory collectives (dist/shm_all_reduce.h: all_reduce, broadcast, all_gather,
// reduce_scatter) between real processes, through GlooProcessGroup (where they are on by
// default) and through ShmAllReduce::try_create directly.
//
// Ranks are forked children (forked_ranks.h), each test bounded by a deadline. Values are
// small integers with closed forms, exact in every dtype: element i of rank r is
// v(r, i) = ((i + 3 r) % 11 - 5) (r + 1), so the ranks' order differs from element to element
// and max/min come from different ranks. Sizes cover 1 element, a few, and a ragged
// 3 * slot + 17 elements (4 chunks, the last one partial, both slot sets used twice).
#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "dist/forked_ranks.h"
#include "dist/shm_probe.h"
#include "dist/gloo_process_group.h"
#include "dist/init.h"
#include "dist/reduce_op.h"
#include "dist/shm_all_reduce.h"
#include "dist/tcp_store.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::shared_ptr<GlooProcessGroup> make_group(int rank, int world, int port,
                                             std::chrono::milliseconds timeout = 5s,
                                             std::optional<bool> shared_memory = std::nullopt) {
  return make_loopback_group(rank, world, port, timeout, /*debug=*/false, shared_memory);
}

// Checks a message with a gmock matcher inside a child (no gtest state there).
void check_message(const std::string& msg, const ::testing::Matcher<const std::string&>& m,
                   const std::string& what) {
  check(::testing::Value(msg, m), what + ": unexpected message: " + msg);
}

// Inside a child: `call` must throw RuntimeError whose message contains `expected` (the
// ranks' calls, as check_same_call names them).
void check_throws_naming(const std::function<void()>& call, const std::string& expected,
                         const std::string& what) {
  try {
    call();
    check(false, what + " did not throw");
  } catch (const RuntimeError& e) {
    check_message(e.what(), HasSubstr(expected), what);
  }
}

double v(int r, int64_t i) { return double((i + 3 * r) % 11 - 5) * (r + 1); }

template <class T>
Tensor rank_tensor(int rank, int64_t n) {
  Tensor t = zeros({n}, dtype_of<T>());
  T* p = t.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) p[i] = T(v(rank, i));
  return t;
}

// The documented result at element i: sum/max/min over ranks; avg is the sum times 1 / world
// in T for floats, the floor of sum / world for integers.
template <class T>
T expected(int world, ReduceOp op, int64_t i) {
  double sum = 0, mx = v(0, i), mn = v(0, i);
  for (int r = 0; r < world; ++r) {
    sum += v(r, i);
    mx = std::max(mx, v(r, i));
    mn = std::min(mn, v(r, i));
  }
  switch (op) {
    case ReduceOp::sum:
      return T(sum);
    case ReduceOp::max:
      return T(mx);
    case ReduceOp::min:
      return T(mn);
    case ReduceOp::avg:
      break;
  }
  if constexpr (std::is_floating_point_v<T>)
    return T(sum) * (T(1) / T(world));
  else
    return T(std::floor(sum / world));
}


template <class T>
void check_exact(ProcessGroup& pg, int rank, int world, ReduceOp op, int64_t n) {
  Tensor t = rank_tensor<T>(rank, n);
  pg.all_reduce(t, op);
  const T* p = t.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] == expected<T>(world, op, i)) continue;
    check(false, std::string(dtype_name(dtype_of<T>())) + " " + reduce_op_name(op) + " of " +
                     std::to_string(n) + " elements: element " + std::to_string(i) + " is " +
                     std::to_string(double(p[i])) + ", expected " +
                     std::to_string(double(expected<T>(world, op, i))));
  }
}

template <class T>
int64_t ragged_size() {
  return 3 * int64_t(ShmAllReduce::kSlotBytes / sizeof(T)) + 17;
}

void exact_values_every_dtype_op_and_size(int world) {
  expect_all_passed(run_ranks(
      world,
      [world](int rank, int port) {
        auto pg = make_group(rank, world, port);
        check(pg->shared_memory(), "shared memory is on for a same-host group");
        for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
          for (int64_t n : {int64_t(1), int64_t(5), int64_t(-1)}) {
            check_exact<float>(*pg, rank, world, op, n < 0 ? ragged_size<float>() : n);
            check_exact<double>(*pg, rank, world, op, n < 0 ? ragged_size<double>() : n);
            check_exact<int64_t>(*pg, rank, world, op, n < 0 ? ragged_size<int64_t>() : n);
            check_exact<int32_t>(*pg, rank, world, op, n < 0 ? ragged_size<int32_t>() : n);
          }
        }
        finish(*pg);
      },
      60s));
}

// The tests below that take a rank count run with 2 and with 3 ranks.
class ShmRanks : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(ShmAllReduce, ShmRanks, ::testing::Values(2, 3),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "Ranks";
                         });

TEST_P(ShmRanks, ExactValuesEveryDtypeOpAndSize) {
  LOOM_SKIP_WITHOUT_SHM();
  exact_values_every_dtype_op_and_size(GetParam());
}

// Non-integer f32 data: element i of rank r.
float fraction(int r, int64_t i) { return float(std::sin(0.37 * double(i) + r) * 1000.0 / 7.0); }

Tensor fraction_tensor(int rank, int64_t n) {
  Tensor t = zeros({n}, DType::f32);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = fraction(rank, i);
  return t;
}

// With two ranks every element is one addition, commutative in IEEE arithmetic: both paths
// must agree bit for bit (with three, Gloo's ring adds in another order).
TEST(ShmAllReduce, BitIdenticalToGlooWithTwoRanks) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(
      2,
      [](int rank, int port) {
        auto shm = make_group(rank, 2, port);
        GlooOptions o;
        o.timeout = 5s;
        o.group_name = "tcp";
        o.shared_memory = false;
        GlooProcessGroup tcp(rank, 2, store_of(*shm), o);
        check(shm->shared_memory() && !tcp.shared_memory(), "one group on each path");
        const int64_t n = ragged_size<float>();
        for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
          Tensor a = fraction_tensor(rank, n), b = fraction_tensor(rank, n);
          shm->all_reduce(a, op);
          tcp.all_reduce(b, op);
          check(std::memcmp(a.data_ptr<float>(), b.data_ptr<float>(), size_t(n) * 4) == 0,
                std::string("shm and Gloo differ for ") + reduce_op_name(op));
        }
        finish(*shm);
      },
      30s));
}

// Whoever owns an element's part, it is folded in rank order: ((x0 + x1) + x2).
TEST(ShmAllReduce, SumsInRankOrderWithThreeRanks) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(
      3,
      [](int rank, int port) {
        auto pg = make_group(rank, 3, port);
        const int64_t n = ragged_size<float>();
        Tensor t = fraction_tensor(rank, n);
        pg->all_reduce(t, ReduceOp::sum);
        const float* p = t.data_ptr<float>();
        for (int64_t i = 0; i < n; ++i) {
          const float want = (fraction(0, i) + fraction(1, i)) + fraction(2, i);
          check(std::memcmp(&p[i], &want, 4) == 0,
                "element " + std::to_string(i) + " is not ((x0 + x1) + x2)");
        }
        finish(*pg);
      },
      30s));
}

TEST(ShmAllReduce, OnByDefaultOffByOptionOrEnvironment) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    auto on = make_group(rank, 2, port);
    check(on->shared_memory(), "default: on");
    auto store = store_of(*on);
    GlooOptions o;
    o.timeout = 5s;
    o.group_name = "off";
    o.shared_memory = false;
    check(!GlooProcessGroup(rank, 2, store, o).shared_memory(), "shared_memory = false: off");
    // One rank opting out turns it off on every rank, or the ranks would disagree on the path.
    o.group_name = "mixed";
    o.shared_memory = rank == 0;
    check(!GlooProcessGroup(rank, 2, store, o).shared_memory(), "rank 1 opted out: off");
    o.shared_memory.reset();
    o.group_name = "env";
    setenv("LOOM_SHM", "0", 1);
    check(!GlooProcessGroup(rank, 2, store, o).shared_memory(), "LOOM_SHM=0: off");
    o.group_name = "env-false";
    setenv("LOOM_SHM", "False", 1);
    check(!GlooProcessGroup(rank, 2, store, o).shared_memory(), "LOOM_SHM=False: off");
    o.group_name = "env-1";
    setenv("LOOM_SHM", "1", 1);
    check(GlooProcessGroup(rank, 2, store, o).shared_memory(), "LOOM_SHM=1: on");
    unsetenv("LOOM_SHM");
    finish(*on);
  }));
}

TEST(ShmAllReduce, OneRankGroupHasNoFastPath) {
  LOOM_SKIP_WITHOUT_SHM();
  ProcessGroupOptions o;
  o.master_port = 0;
  o.timeout = 5s;
  auto pg = std::dynamic_pointer_cast<GlooProcessGroup>(init_process_group(o));
  ASSERT_NE(pg, nullptr);
  EXPECT_FALSE(pg->shared_memory());
}

TEST(ShmAllReduce, TryCreateReportsWhyNot) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    TCPStore store("127.0.0.1", port, 2, rank == 0, 5s, true);
    std::string why;
    auto shm = ShmAllReduce::try_create(rank, 2, store, "t/optout", 5s, rank == 0, &why);
    check(shm == nullptr, "a rank opted out, yet the fast path is on");
    check_message(why, HasSubstr("rank 1: disabled on rank 1"), "why_not");
    auto ok = ShmAllReduce::try_create(rank, 2, store, "t/ok", 5s, true, &why);
    check(ok != nullptr && ok->size() == 2 && ok->rank() == rank, "both ranks want it: on");
    // Rank 0 hosts the store: it leaves only once rank 1's last request has been answered.
    if (rank == 1) store.set("t/bye", std::string_view("1"));
    if (rank == 0) store.wait({"t/bye"});
  }));
}

TEST(ShmAllReduce, HalfPrecisionIsWidenedAndReduced) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    auto pg = make_group(rank, 2, port);
    for (DType dt : {DType::f16, DType::bf16}) {
      const std::string name(dtype_name(dt));
      // Rank r holds 10 r - i + 0.5: sum 10 - 2 i + 1, max 10 - i + 0.5, avg 5 - i + 0.5.
      std::vector<double> x{10.0 * rank + 0.5, 10.0 * rank - 0.5, 10.0 * rank - 1.5};
      Tensor s = from_vector(x, {}, dt), m = from_vector(x, {}, dt), a = from_vector(x, {}, dt);
      pg->all_reduce(s, ReduceOp::sum);
      pg->all_reduce(m, ReduceOp::max);
      pg->all_reduce(a, ReduceOp::avg);
      check_values(s, {11, 9, 7}, "sum " + name);
      check_values(m, {10.5, 9.5, 8.5}, "max " + name);
      check_values(a, {5.5, 4.5, 3.5}, "avg " + name);
    }
    finish(*pg);
  }));
}

TEST(ShmAllReduce, ReduceScatterGoesThroughTheFastPath) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(3, [](int rank, int port) {
    auto pg = make_group(rank, 3, port);
    check(pg->shared_memory(), "shm on");
    // Input (6): element k of rank r is (r + 1) k; rank q gets k = 2q, 2q + 1 summed: 6 k.
    std::vector<double> in;
    for (int k = 0; k < 6; ++k) in.push_back((rank + 1.0) * k);
    Tensor out = pg->reduce_scatter(from_vector(in, {}, DType::f64), ReduceOp::sum);
    check_values(out, {12.0 * rank, 12.0 * rank + 6}, "reduce_scatter");
    finish(*pg);
  }));
}

// all_gather through the slots: several chunks with a ragged tail, every rank's block in
// rank order, interleaved with all_reduces (the slot sets alternate across kinds of calls).
void all_gather_every_size(int world) {
  expect_all_passed(run_ranks(
      world,
      [world](int rank, int port) {
        auto pg = make_group(rank, world, port);
        check(pg->shared_memory(), "shared memory is on for a same-host group");
        for (int64_t n : {int64_t(1), int64_t(5), 2 * int64_t(ShmAllReduce::kSlotBytes / 8) + 5}) {
          Tensor out = pg->all_gather(rank_tensor<double>(rank, n));
          const double* p = out.data_ptr<double>();
          for (int r = 0; r < world; ++r)
            for (int64_t i = 0; i < n; ++i)
              if (p[r * n + i] != v(r, i))
                check(false, "all_gather of " + std::to_string(n) + ": rank " +
                                 std::to_string(r) + "'s element " + std::to_string(i) + " is " +
                                 std::to_string(p[r * n + i]));
          check_exact<float>(*pg, rank, world, ReduceOp::sum, ragged_size<float>());
        }
        Tensor h = pg->all_gather(full({3}, double(rank + 1), DType::bf16));
        std::vector<double> want;
        for (int r = 0; r < world; ++r) want.insert(want.end(), 3, double(r + 1));
        check_values(h, want, "bf16 all_gather");
        finish(*pg);
      },
      60s));
}

TEST_P(ShmRanks, AllGatherEverySize) {
  LOOM_SKIP_WITHOUT_SHM();
  all_gather_every_size(GetParam());
}

// reduce_scatter: rank r's input is v(r, k) for k over all world * block elements, so rank
// q's output element i must be the reduction of v(., q * block + i) over ranks.
template <class T>
void check_reduce_scatter(ProcessGroup& pg, int rank, int world, ReduceOp op, int64_t block) {
  Tensor out = pg.reduce_scatter(rank_tensor<T>(rank, world * block), op);
  const T* p = out.data_ptr<T>();
  for (int64_t i = 0; i < block; ++i) {
    const T want = expected<T>(world, op, rank * block + i);
    if (p[i] == want) continue;
    check(false, std::string(dtype_name(dtype_of<T>())) + " reduce_scatter " +
                     reduce_op_name(op) + " of blocks of " + std::to_string(block) +
                     ": element " + std::to_string(i) + " is " + std::to_string(double(p[i])) +
                     ", expected " + std::to_string(double(want)));
  }
}

// Blocks of 1, 5 and several chunks: a chunk carries kSlotBytes / world bytes of each block.
template <class T>
int64_t multi_chunk_block(int world) {
  return 2 * int64_t(ShmAllReduce::kSlotBytes / sizeof(T)) / world + 17;
}

void reduce_scatter_exact_values(int world) {
  expect_all_passed(run_ranks(
      world,
      [world](int rank, int port) {
        auto pg = make_group(rank, world, port);
        for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
          for (int64_t b : {int64_t(1), int64_t(5)}) {
            check_reduce_scatter<float>(*pg, rank, world, op, b);
            check_reduce_scatter<double>(*pg, rank, world, op, b);
            check_reduce_scatter<int64_t>(*pg, rank, world, op, b);
            check_reduce_scatter<int32_t>(*pg, rank, world, op, b);
          }
          check_reduce_scatter<float>(*pg, rank, world, op, multi_chunk_block<float>(world));
          check_reduce_scatter<int64_t>(*pg, rank, world, op, multi_chunk_block<int64_t>(world));
        }
        finish(*pg);
      },
      60s));
}

TEST_P(ShmRanks, ReduceScatterExactValues) {
  LOOM_SKIP_WITHOUT_SHM();
  reduce_scatter_exact_values(GetParam());
}

// The header's promise: a rank's block equals that block of an all_reduce bit for bit (the
// same rank-order sums), here on non-integer f32 data with three ranks; and 16-bit inputs
// are widened, reduced in f32 and rounded once, as all_reduce does.
TEST(ShmAllReduce, ReduceScatterMatchesAllReduceBitForBit) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(3, [](int rank, int port) {
    auto pg = make_group(rank, 3, port);
    const int64_t block = int64_t(ShmAllReduce::kSlotBytes / sizeof(float)) / 3 + 100;
    Tensor in = fraction_tensor(rank, 3 * block);
    Tensor scattered = pg->reduce_scatter(in, ReduceOp::sum);
    Tensor all = native::clone(in);
    pg->all_reduce(all, ReduceOp::sum);
    check(scattered.equal(all.narrow(0, rank * block, block)), "reduce_scatter != all_reduce");
    for (DType dt : {DType::f16, DType::bf16}) {
      Tensor h = in.to(dt);
      Tensor hs = pg->reduce_scatter(h, ReduceOp::avg);
      Tensor ha = native::clone(h);
      pg->all_reduce(ha, ReduceOp::avg);
      check(hs.equal(ha.narrow(0, rank * block, block)),
            std::string(dtype_name(dt)) + " reduce_scatter != all_reduce");
    }
    finish(*pg);
  }));
}

TEST(ShmAllReduce, AllGatherAgainstReduceScatterFailsOnEveryRankNamingBoth) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    auto pg = make_group(rank, 2, port);
    check_throws_naming(
        [&] {
          if (rank == 0)
            pg->all_gather(zeros({4}, DType::f32));
          else
            pg->reduce_scatter(zeros({8}, DType::f32), ReduceOp::sum);
        },
        "collective #1 mismatch (seen from rank " + std::to_string(rank) +
            "): rank 0 called all_gather(f32, [4]) but rank 1 called reduce_scatter(f32, [8], sum)",
        "all_gather against reduce_scatter");
    finish(*pg);
  }));
}

TEST(ShmAllReduce, MissingRankIsNamedWithinTheTimeout) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(3, [](int rank, int port) {
    auto pg = make_group(rank, 3, port, 1s);
    if (rank != 2) {  // rank 2 stays alive but never calls the all_reduce
      try {
        Tensor t = zeros({100}, DType::f32);
        pg->all_reduce(t);
        check(false, "an all_reduce missing rank 2 did not throw");
      } catch (const RuntimeError& e) {
        const std::string msg = e.what();
        check_message(msg, HasSubstr("collective #1 all_reduce(f32, [100], sum) failed"), "op");
        check_message(msg,
                      HasSubstr("shared-memory collective (3 ranks on this host): rank 2 "
                                "did not arrive within 1000 ms"),
                      "who");
        check_message(msg, HasSubstr("Check the output of rank 2"), "hint");
      }
    }
    finish(*pg);
  }));
}

// Broadcast goes through root's slots: any dtype, any root, several chunks with a ragged
// tail, interleaved with all_reduces (the slot sets alternate across both kinds of calls).
void broadcast_every_root(int world) {
  expect_all_passed(run_ranks(
      world,
      [world](int rank, int port) {
        auto pg = make_group(rank, world, port);
        check(pg->shared_memory(), "shared memory is on for a same-host group");
        const int64_t n = int64_t(ShmAllReduce::kSlotBytes / sizeof(double)) * 2 + 5;
        for (int root = 0; root < world; ++root) {
          Tensor d = rank_tensor<double>(rank, n);
          pg->broadcast(d, root);
          const double* p = d.data_ptr<double>();
          for (int64_t i = 0; i < n; ++i)
            if (p[i] != v(root, i))
              check(false, "f64 broadcast from rank " + std::to_string(root) + ": element " +
                               std::to_string(i) + " is " + std::to_string(p[i]));
          check_exact<float>(*pg, rank, world, ReduceOp::sum, ragged_size<float>());
          Tensor h = full({7}, double(rank + 1), DType::bf16);
          pg->broadcast(h, root);
          check_values(h, std::vector<double>(7, double(root + 1)), "bf16 broadcast");
        }
        finish(*pg);
      },
      60s));
}

TEST_P(ShmRanks, BroadcastFromEveryRoot) {
  LOOM_SKIP_WITHOUT_SHM();
  broadcast_every_root(GetParam());
}

TEST(ShmAllReduce, BroadcastAgainstAllReduceFailsOnEveryRankNamingBoth) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    auto pg = make_group(rank, 2, port);
    check_throws_naming(
        [&] {
          Tensor t = zeros({4}, DType::f32);
          if (rank == 0)
            pg->broadcast(t, 1);
          else
            pg->all_reduce(t, ReduceOp::max);
        },
        "collective #1 mismatch (seen from rank " + std::to_string(rank) +
            "): rank 0 called broadcast(f32, [4], src=1) but rank 1 called all_reduce(f32, [4], max)",
        "broadcast against all_reduce");
    finish(*pg);
  }));
}

TEST(ShmAllReduce, MismatchedCallsFailOnEveryRankAndTheGroupRecovers) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    auto pg = make_group(rank, 2, port);
    check_throws_naming(
        [&] {
          Tensor t = zeros({rank == 0 ? 10 : 20}, DType::f32);
          pg->all_reduce(t, ReduceOp::sum);
        },
        "collective #1 mismatch (seen from rank " + std::to_string(rank) +
            "): rank 0 called all_reduce(f32, [10], sum) but rank 1 called all_reduce(f32, [20], "
            "sum)",
        "all_reduces of different sizes");
    Tensor t = full({3}, rank + 1.0, DType::f32);
    pg->all_reduce(t);
    check_values(t, {3, 3, 3}, "the next all_reduce");
    finish(*pg);
  }));
}

// Entries of /dev/shm made by the process `pid` (the segment name embeds its creator's pid).
std::vector<std::string> segments_of(pid_t pid) {
  const std::string prefix = "loom-" + std::to_string(pid) + "-";
  std::vector<std::string> found;
  if (DIR* dir = opendir("/dev/shm")) {
    while (dirent* e = readdir(dir)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) found.push_back(e->d_name);
    }
    closedir(dir);
  }
  return found;
}

TEST(ShmAllReduce, NothingIsLeftInDevShm) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    check(segments_of(getpid()).empty(), "no segment before the group");
    {
      auto pg = make_group(rank, 2, port);
      check(pg->shared_memory(), "shm on");
      // Rank 0 created the segment and unlinked it once every rank had mapped it.
      check(segments_of(getpid()).empty(), "the segment is unlinked after setup");
      Tensor t = full({1000}, 1.0, DType::f64);
      pg->all_reduce(t);
      check(t.to_vector<double>()[999] == 2.0, "reduces with the name gone");
      finish(*pg);
    }
    check(segments_of(getpid()).empty(), "no segment after the group");
  }));
}

TEST(ShmAllReduce, KilledRankIsDetectedAndLeavesNothing) {
  LOOM_SKIP_WITHOUT_SHM();
  auto errors = run_ranks(2, [](int rank, int port) {
    auto pg = make_group(rank, 2, port, 5s);
    auto store = store_of(*pg);
    if (rank == 0) store->set("test/pid0", std::to_string(getpid()));
    const pid_t pid0 = pid_t(std::stol(store->get_string("test/pid0")));
    pg->barrier();  // rank 1 has read the pid before rank 0 dies (it hosts the store)
    Tensor t = full({1 << 20}, 1.0, DType::f32);
    if (rank == 0) {
      auto work = pg->all_reduce_async(t, ReduceOp::sum);
      kill(getpid(), SIGKILL);  // mid-run: the worker may be inside the shm barriers
    }
    try {
      // Rank 0 may have finished the first one before dying; the second cannot complete.
      pg->all_reduce(t);
      pg->all_reduce(t);
      check(false, "all_reduce with a killed peer did not throw");
    } catch (const RuntimeError& e) {
      check_message(e.what(),
                    HasSubstr("rank 0 exited (pid " + std::to_string(pid0) + ") before reaching"),
                    "death detected, not a timeout");
    }
    check(segments_of(pid0).empty(), "the killed rank left a segment in /dev/shm");
  });
  EXPECT_THAT(errors[0], HasSubstr("exited abnormally"));
  EXPECT_EQ(errors[1], "");
}

}  // namespace
}  // namespace loom::dist
