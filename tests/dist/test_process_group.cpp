// GlooProcessGroup and init_process_group between real processes.
//
// Each multi-rank test forks one child per rank (forked_ranks.h: run_ranks, check) and runs
// the body there, bounded by a deadline.
//
// Values are rank-dependent with closed forms, e.g. rank r holds (r + 1) * k so the sum over
// n ranks is n (n + 1) / 2 * k; all are small integers, exact in every dtype including bf16.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "dist/gloo_process_group.h"
#include "dist/forked_ranks.h"
#include "dist/init.h"
#include "dist/socket.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::shared_ptr<ProcessGroup> make_group(int rank, int world, int port,
                                         std::chrono::milliseconds timeout = 5s,
                                         std::optional<bool> debug = false,
                                         std::optional<bool> shared_memory = std::nullopt) {
  return make_loopback_group(rank, world, port, timeout, debug, shared_memory);
}

TEST(ForkedRanks, HarnessReportsFailuresAndKillsHungRanks) {
  auto errors = run_ranks(
      3,
      [](int rank, int) {
        if (rank == 1) check(false, "rank 1 failed on purpose");
        if (rank == 2) std::this_thread::sleep_for(30s);
      },
      1s);
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "rank 1 failed on purpose");
  EXPECT_THAT(errors[2], HasSubstr("killed"));
}

const DType kDTypes[] = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i64, DType::i32};

// Element i of rank r: (r + 1) * (i % 7 + 1).
Tensor rank_values(int rank, const Shape& shape, DType dtype) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = (rank + 1) * double(i % 7 + 1);
  return from_vector(v, shape, dtype);
}

void all_reduce_sum_every_dtype(int world) {
  expect_all_passed(run_ranks(world, [world](int rank, int port) {
    auto pg = make_group(rank, world, port);
    check(pg->rank() == rank && pg->size() == world && pg->backend() == "gloo", "identity");
    for (DType dt : kDTypes) {
      Tensor t = rank_values(rank, {3, 5}, dt);
      pg->all_reduce(t, ReduceOp::sum);
      std::vector<double> expected(15);
      for (size_t i = 0; i < 15; ++i) expected[i] = world * (world + 1) / 2 * double(i % 7 + 1);
      check(t.dtype() == dt, "dtype kept");
      check_values(t, expected, std::string("all_reduce sum ") + std::string(dtype_name(dt)));
    }
    Tensor u = from_vector(std::vector<double>{1, 2, 3}, {}, DType::u8);
    pg->all_reduce(u);
    check_values(u, {double(world), 2.0 * world, 3.0 * world}, "all_reduce sum u8");
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, AllReduceSumEveryDtypeTwoRanks) { all_reduce_sum_every_dtype(2); }
TEST(GlooProcessGroup, AllReduceSumEveryDtypeThreeRanks) { all_reduce_sum_every_dtype(3); }

TEST(GlooProcessGroup, AllReduceAvgMaxMin) {
  constexpr int kWorld = 3;
  expect_all_passed(run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_group(rank, kWorld, port);
    for (DType dt : kDTypes) {
      const std::string name(dtype_name(dt));
      // Rank r holds 10 r - i: max 20 - i, min -i, avg (30 - 3 i) / 3 = 10 - i.
      std::vector<double> v{10.0 * rank, 10.0 * rank - 1, 10.0 * rank - 2};
      Tensor mx = from_vector(v, {}, dt), mn = from_vector(v, {}, dt), av = from_vector(v, {}, dt);
      pg->all_reduce(mx, ReduceOp::max);
      pg->all_reduce(mn, ReduceOp::min);
      pg->all_reduce(av, ReduceOp::avg);
      check_values(mx, {20, 19, 18}, "max " + name);
      check_values(mn, {0, -1, -2}, "min " + name);
      check_values(av, {10, 9, 8}, "avg " + name);
    }
    // Integer avg floors: sums {1, -1, -2, 5} / 3 -> {0, -1, -1, 1}.
    std::vector<std::vector<double>> per_rank{{1, 0, 0, 5}, {0, -1, -1, 0}, {0, 0, -1, 0}};
    Tensor i = from_vector(per_rank[size_t(rank)], {}, DType::i64);
    pg->all_reduce(i, ReduceOp::avg);
    check_values(i, {0, -1, -1, 1}, "i64 avg floors");
    // f32 avg is exact division: 1/3.
    Tensor f = from_vector(std::vector<double>{rank == 0 ? 1.0 : 0.0}, {}, DType::f32);
    pg->all_reduce(f, ReduceOp::avg);
    check(f.to_vector<float>()[0] == 1.0f / 3.0f, "f32 avg 1/3");
    finish(*pg);
  }));
}

// all_gather and reduce_scatter run through shared memory between ranks of one host by
// default (dist/shm_all_reduce.h), and through Gloo's TCP with shared_memory = false: both.
void all_gather_layout_every_dtype(std::optional<bool> shared_memory) {
  constexpr int kWorld = 3;
  expect_all_passed(run_ranks(kWorld, [shared_memory](int rank, int port) {
    auto pg = make_group(rank, kWorld, port, 5s, false, shared_memory);
    for (DType dt : kDTypes) {
      std::vector<double> v(6);
      for (size_t j = 0; j < 6; ++j) v[j] = 10.0 * rank + double(j);
      Tensor t = from_vector(v, Shape{2, 3}, dt);
      Tensor out = pg->all_gather(t);
      check(out.sizes() == Shape({kWorld, 2, 3}) && out.dtype() == dt, "all_gather out shape");
      std::vector<double> expected;
      for (int r = 0; r < kWorld; ++r)
        for (int j = 0; j < 6; ++j) expected.push_back(10.0 * r + j);
      check_values(out, expected, "all_gather " + std::string(dtype_name(dt)));
      check_values(t, v, "all_gather leaves the input");
    }
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, AllGatherLayoutEveryDtype) { all_gather_layout_every_dtype(std::nullopt); }
TEST(GlooProcessGroup, AllGatherLayoutEveryDtypeOverTcp) { all_gather_layout_every_dtype(false); }

void reduce_scatter_layout_every_dtype(std::optional<bool> shared_memory) {
  constexpr int kWorld = 2;
  expect_all_passed(run_ranks(kWorld, [shared_memory](int rank, int port) {
    auto pg = make_group(rank, kWorld, port, 5s, false, shared_memory);
    for (DType dt : kDTypes) {
      // Input (4, 3); element k of rank r is (r + 1) * (k % 7 + 1); rank q gets rows 2q..2q+1.
      Tensor in = rank_values(rank, {4, 3}, dt);
      Tensor before = native::clone(in);
      Tensor out = pg->reduce_scatter(in, ReduceOp::sum);
      check(out.sizes() == Shape({2, 3}), "reduce_scatter out shape");
      std::vector<double> expected;
      for (int k = 6 * rank; k < 6 * rank + 6; ++k) expected.push_back(3.0 * (k % 7 + 1));
      check_values(out, expected, "reduce_scatter " + std::string(dtype_name(dt)));
      check(in.equal(before), "reduce_scatter leaves the input");
    }
    Tensor in = from_vector(std::vector<double>{double(rank), 4, 1, 8}, Shape{4}, DType::f32);
    check_values(pg->reduce_scatter(in, ReduceOp::max), rank == 0 ? std::vector<double>{1, 4}
                                                                   : std::vector<double>{1, 8},
                 "reduce_scatter max");
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, ReduceScatterLayoutEveryDtype) {
  reduce_scatter_layout_every_dtype(std::nullopt);
}
TEST(GlooProcessGroup, ReduceScatterLayoutEveryDtypeOverTcp) {
  reduce_scatter_layout_every_dtype(false);
}

TEST(GlooProcessGroup, BroadcastFromRankOneEveryDtype) {
  constexpr int kWorld = 3;
  expect_all_passed(run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_group(rank, kWorld, port);
    for (DType dt : kDTypes) {
      Tensor t = rank_values(rank, {2, 4}, dt);
      pg->broadcast(t, 1);
      check(t.equal(rank_values(1, {2, 4}, dt)), "broadcast " + std::string(dtype_name(dt)));
    }
    Tensor b = from_vector(std::vector<bool>{rank == 1, true, false});
    pg->broadcast(b, 1);
    check_values(b, {1, 1, 0}, "broadcast bool");
    pg->barrier();
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, AsyncOpsOverlapAndCompleteInOrder) {
  constexpr int kWorld = 2;
  expect_all_passed(run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_group(rank, kWorld, port);
    Tensor a = full({1 << 16}, rank + 1.0, DType::f32);
    Tensor b = full({1000}, 10.0 * (rank + 1), DType::f64);
    auto wa = pg->all_reduce_async(a, ReduceOp::sum);
    auto wb = pg->all_reduce_async(b, ReduceOp::max);
    auto wc = pg->barrier_async();
    wc->wait();  // issue order: the barrier ran after both reductions
    check(wa->is_completed() && wb->is_completed(), "earlier works complete before a later one");
    wb->wait();
    wa->wait();
    check(a.to_vector<float>().back() == 3.0f && a.to_vector<float>().front() == 3.0f, "a");
    check(b.to_vector<double>()[500] == 20.0, "b");
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, SeveralGroupsShareOneStore) {
  constexpr int kWorld = 2;
  expect_all_passed(run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_group(rank, kWorld, port);
    GlooOptions o;
    o.timeout = 5s;
    o.group_name = "second";
    GlooProcessGroup second(rank, kWorld, store_of(*pg), o);
    check(second.group_name() == "second", "group name");
    Tensor x = full({4}, rank + 1.0, DType::f32);
    Tensor y = full({4}, 10.0 * (rank + 1), DType::f32);
    auto wy = second.all_reduce_async(y, ReduceOp::sum);
    pg->all_reduce(x);
    wy->wait();
    check_values(x, {3, 3, 3, 3}, "first group");
    check_values(y, {30, 30, 30, 30}, "second group");
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, DeadRankFailsTheCollectiveWithinTheTimeout) {
  constexpr int kWorld = 2;
  auto errors = run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_group(rank, kWorld, port, 2s);
    pg->barrier();            // both ranks fully connected
    if (rank == 1) _exit(0);  // dies before the next collective, without any cleanup
    auto start = std::chrono::steady_clock::now();
    Tensor t = full({1 << 12}, 1.0, DType::f32);
    try {
      pg->all_reduce(t);
    } catch (const RuntimeError& e) {
      auto took = std::chrono::steady_clock::now() - start;
      check(took < 4s, "failed only after " +
                           std::to_string(std::chrono::duration<double>(took).count()) + " s");
      std::string msg = e.what();
      check(msg.find("collective #2 all_reduce(f32, [4096], sum)") != std::string::npos &&
                msg.find("timeout 2000 ms") != std::string::npos &&
                msg.find("A rank may have died or called a different collective") !=
                    std::string::npos,
            "unexpected message: " + msg);
      return;
    }
    check(false, "all_reduce with a dead peer did not throw");
  });
  expect_all_passed(errors);
}

TEST(GlooProcessGroup, SilentPeerTimesOutWithTheOpAndTimeout) {
  constexpr int kWorld = 2;
  expect_all_passed(run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_group(rank, kWorld, port, 1s);
    if (rank == 0) {  // rank 1 stays alive but never joins the collective
      try {
        Tensor t = zeros({8}, DType::i64);
        pg->all_reduce(t, ReduceOp::max);
        check(false, "a collective without its peer did not throw");
      } catch (const RuntimeError& e) {
        std::string msg = e.what();
        check(msg.find("collective #1 all_reduce(i64, [8], max) failed after ") !=
                      std::string::npos &&
                  msg.find(" ms (timeout 1000 ms)") != std::string::npos,
              "unexpected message: " + msg);
      }
    }
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, DebugModeNamesTheMismatchOnEveryRank) {
  constexpr int kWorld = 2;
  expect_all_passed(run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_group(rank, kWorld, port, 5s, /*debug=*/true);
    Tensor ok = full({2}, 1.0, DType::f32);
    pg->all_reduce(ok);  // collective #1 matches
    check_values(ok, {2, 2}, "matching collective");
    try {
      if (rank == 0) {
        Tensor t = zeros({4, 4}, DType::f32);
        pg->all_reduce(t, ReduceOp::sum);
      } else {
        Tensor t = zeros({4}, DType::f32);
        pg->broadcast(t, 0);
      }
      check(false, "mismatched collectives did not throw");
    } catch (const RuntimeError& e) {
      std::string msg = e.what();
      check(msg.find("collective #2 mismatch: rank 0 called all_reduce(f32, [4, 4], sum) but "
                     "rank 1 called broadcast(f32, [4], src=0)") != std::string::npos,
            "unexpected message: " + msg);
    }
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, DebugModeTimeoutNamesTheMissingRank) {
  constexpr int kWorld = 3;
  expect_all_passed(run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_group(rank, kWorld, port, 1500ms, /*debug=*/true);
    if (rank != 2) {  // rank 2 never issues the collective
      try {
        Tensor t = zeros({3}, DType::f64);
        pg->all_reduce(t);
        check(false, "a collective missing rank 2 did not throw");
      } catch (const RuntimeError& e) {
        std::string msg = e.what();
        check(msg.find("collective #1 all_reduce(f64, [3], sum): rank 2 did not arrive within "
                       "1500 ms") != std::string::npos,
              "unexpected message: " + msg);
      }
    }
    finish(*pg);
  }));
}

TEST(GlooProcessGroup, DebugFlagFromEnvironment) {
  setenv("LOOM_DEBUG_COLLECTIVES", "1", 1);
  EXPECT_TRUE(debug_collectives_from_env());
  setenv("LOOM_DEBUG_COLLECTIVES", "0", 1);
  EXPECT_FALSE(debug_collectives_from_env());
  unsetenv("LOOM_DEBUG_COLLECTIVES");
  EXPECT_FALSE(debug_collectives_from_env());
}

// A one-rank group needs no peer: argument validation runs in this process.
class SingleRank : public ::testing::Test {
 protected:
  void SetUp() override {
    ProcessGroupOptions o;
    o.master_port = 0;
    o.timeout = 5s;
    pg_ = init_process_group(o);
  }
  std::shared_ptr<ProcessGroup> pg_;
};

template <class Fn>
std::string value_error(Fn&& fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no ValueError";
}

TEST_F(SingleRank, OpsAreIdentitiesExceptAvgFloor) {
  Tensor t = from_vector(std::vector<double>{-3, 5}, {}, DType::i32);
  pg_->all_reduce(t, ReduceOp::avg);
  EXPECT_EQ(t.to_vector<int32_t>(), (std::vector<int32_t>{-3, 5}));
  Tensor h = from_vector(std::vector<double>{1.5, -2}, {}, DType::f16);
  pg_->all_reduce(h, ReduceOp::sum);
  EXPECT_EQ(h.to_double_vector(), (std::vector<double>{1.5, -2}));
  EXPECT_EQ(pg_->all_gather(h).sizes(), (Shape{1, 2}));
  Tensor empty = zeros({0, 3}, DType::f32);
  pg_->all_reduce(empty);
  pg_->barrier();
  ASSERT_NE(store_of(*pg_), nullptr);
}

TEST_F(SingleRank, ValidatesArguments) {
  Tensor m = zeros({4, 3}, DType::f32);
  EXPECT_THAT(value_error([&] { pg_->all_reduce(native::transpose(m, 0, 1)); }),
              HasSubstr("all_reduce: the tensor of shape [3, 4] with strides [1, 3] is not "
                        "contiguous"));
  Tensor meta = native::empty({2}, DType::f32, Device::meta());
  EXPECT_THAT(value_error([&] { pg_->all_reduce(meta); }),
              HasSubstr("is on meta but the gloo backend only takes CPU tensors"));
  EXPECT_THAT(value_error([&] { pg_->broadcast(m, 1); }),
              HasSubstr("broadcast: src 1 is not a rank of this 1-rank group"));
  EXPECT_THAT(value_error([&] { pg_->all_gather_async(zeros({2, 4, 3}), m); }),
              HasSubstr("all_gather: the output has shape [2, 4, 3] but a 1-rank gather of "
                        "input [4, 3] needs (size, *input.shape) = [1, 4, 3]"));
  EXPECT_THAT(value_error([&] { pg_->all_gather_async(zeros({1, 4, 3}, DType::f64), m); }),
              HasSubstr("all_gather: the output is f64 but the input is f32"));
  EXPECT_THAT(value_error([&] { pg_->reduce_scatter_async(zeros({2, 3}), m, ReduceOp::sum); }),
              HasSubstr("reduce_scatter: the output has shape [2, 3] but input [4, 3]"));
  EXPECT_THAT(value_error([&] { pg_->reduce_scatter(zeros({}), ReduceOp::sum); }),
              HasSubstr("reduce_scatter: the input's dim 0 must split evenly"));
  Tensor b = from_vector(std::vector<bool>{true});
  EXPECT_THAT(value_error([&] { pg_->all_reduce(b, ReduceOp::avg); }),
              HasSubstr("avg is not defined for bool"));
  EXPECT_THAT(value_error([&] { pg_->all_reduce(Tensor()); }), HasSubstr("undefined tensor"));
}

TEST(InitProcessGroup, RejectsBadOptions) {
  ProcessGroupOptions o;
  o.backend = "mpi";
  EXPECT_THAT(value_error([&] { init_process_group(o); }), HasSubstr("unknown backend 'mpi'"));
  o.backend = "gloo";
  o.world_size = 2;
  o.rank = 2;
  EXPECT_THAT(value_error([&] { init_process_group(o); }),
              HasSubstr("rank 2 is outside [0, 2)"));
  o.rank = 1;
  o.master_port = 0;
  EXPECT_THAT(value_error([&] { init_process_group(o); }), HasSubstr("needs rank 0's store port"));
}

TEST(InitProcessGroup, MissingPeerAndPortInUseSurfaceFromTheStore) {
  ProcessGroupOptions o;
  o.world_size = 2;
  o.master_port = 0;
  o.timeout = 500ms;
  try {
    init_process_group(o);
    ADD_FAILURE() << "no error with a missing peer";
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("only 1 of 2 processes joined"));
  }
  UniqueFd taken = listen_tcp(0);
  o.world_size = 1;
  o.master_port = bound_port(taken.get());
  try {
    init_process_group(o);
    ADD_FAILURE() << "no error with the port taken";
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(o.master_port)));
  }
}

}  // namespace
}  // namespace loom::dist
