// Collectives across nodes: the direct reduce-scatter over Gloo's TCP pairs
// (dist/gloo_reduce_scatter.h) and the hierarchical all_reduce (GlooProcessGroup Note
// [Hierarchical all_reduce]), against a reference fold computed here.
//
// Several "nodes" live on this host through GlooOptions::node_key: ranks with the same key
// share a segment, ranks with different keys talk over TCP only, as on separate machines.
// Values are fractions whose sums round, so a result equals the reference bit for bit only
// when the ranks were folded in the documented order: rank order for reduce_scatter and for
// nodes holding consecutive ranks; nodes in order of their lowest rank, each node's ranks
// ascending, otherwise. Integers and 16-bit floats use small exact values for every op.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "dist/elementwise_reduce.h"
#include "dist/forked_ranks.h"
#include "dist/gloo_process_group.h"
#include "dist/gloo_reduce_scatter.h"
#include "dist/node_topology.h"
#include "dist/reduce_op.h"
#include "dist/shm_probe.h"
#include "tensor/factories.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;

constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min};

// Element i of rank r: a fraction that rounds when summed (f32/f64), or a small integer.
double fraction(int r, int64_t i) { return 1.0 / double(3 + 7 * r + (i % 13)) + 0.1 * r; }
double small(int r, int64_t i) { return double((i + 3 * r) % 11 - 5) * (r + 1); }

template <class T>
T value(int r, int64_t i) {
  if constexpr (std::is_floating_point_v<T>)
    return T(fraction(r, i));
  else if constexpr (std::is_same_v<T, bool>)
    return ((i + r) % 3) == 0;
  else if constexpr (std::is_same_v<T, uint8_t>)
    return uint8_t((i * 7 + r * 5) % 200);
  else
    return from_double<T>(small(r, i));
}

template <class T>
Tensor rank_tensor(int r, int64_t n) {
  Tensor t = zeros({n}, dtype_of<T>());
  T* p = t.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) p[i] = value<T>(r, i);
  return t;
}

// The reference: fold `order`'s contributions left to right with loom's element-wise ops, in
// f32 for 16-bit floats (rounded once), or/and for bool; avg divides once at the end.
template <class T>
std::vector<T> reference(const std::vector<int>& order, ReduceOp op, int64_t n) {
  using Acc = std::conditional_t<std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>, float,
                                 std::conditional_t<std::is_same_v<T, bool>, uint8_t, T>>;
  const ReduceOp fold = std::is_same_v<T, bool> ? (op == ReduceOp::min ? op : ReduceOp::max) : op;
  std::vector<Acc> acc(static_cast<size_t>(n)), x(static_cast<size_t>(n));
  for (size_t k = 0; k < order.size(); ++k) {
    for (int64_t i = 0; i < n; ++i) {
      const T v = value<T>(order[k], i);
      Acc a;
      if constexpr (std::is_same_v<Acc, float> && !std::is_same_v<T, float>)
        a = float(to_double(v));
      else
        a = Acc(v);
      (k == 0 ? acc : x)[size_t(i)] = a;
    }
    if (k > 0) combine_into(acc.data(), x.data(), n, fold);
  }
  if (op == ReduceOp::avg) divide_by(acc.data(), n, int64_t(order.size()));
  std::vector<T> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<Acc, float> && !std::is_same_v<T, float>)
      out[size_t(i)] = from_double<T>(acc[size_t(i)]);
    else
      out[size_t(i)] = T(acc[size_t(i)]);
  }
  return out;
}

template <class T>
void check_equal_bits(const T* got, const std::vector<T>& want, int64_t offset, int64_t n,
                      const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    const T w = want[size_t(offset + i)];  // a copy: vector<bool> has no element address
    if (std::memcmp(&got[i], &w, sizeof(T)) == 0) continue;
    check(false, what + ": element " + std::to_string(i) + " is " +
                     std::to_string(to_double(got[i])) + ", the reference " +
                     std::to_string(to_double(w)));
  }
}

std::vector<int> iota_ranks(int world) {
  std::vector<int> r(static_cast<size_t>(world));
  for (int i = 0; i < world; ++i) r[size_t(i)] = i;
  return r;
}

// A group over the default group's store: `keys[rank]` as node key ("" : detected), or
// shared memory off.
std::shared_ptr<GlooProcessGroup> make_group(ProcessGroup& base, int rank, int world,
                                             const std::string& name,
                                             const std::vector<std::string>& keys,
                                             std::optional<bool> shared_memory = std::nullopt) {
  GlooOptions o;
  o.timeout = 20s;
  o.group_name = name;
  o.shared_memory = shared_memory;
  if (!keys.empty()) o.node_key = keys[size_t(rank)];
  return std::make_shared<GlooProcessGroup>(rank, world, store_of(base), o);
}

// ---- node topology ------------------------------------------------------------------------

TEST(NodeTopology, GroupsEqualKeysOrdersNodesByLowestRank) {
  const std::string key = local_node_key();
  EXPECT_FALSE(key.empty());
  EXPECT_EQ(key, local_node_key());
  expect_all_passed(run_ranks(4, [](int rank, int port) {
    auto base = make_loopback_group(rank, 4, port, 20s, false, false);
    const std::vector<std::string> keys{"x", "y", "x", ""};
    NodeTopology t =
        exchange_node_keys(rank, 4, *store_of(*base), "test/topo", keys[size_t(rank)], 10s);
    check(t.str() == "3 nodes: {0, 2} {1} {3}", "grouping: " + t.str());
    check(!t.all_keyed && !t.contiguous(), "rank 3 has no key; nodes not consecutive");
    const int want_node[] = {0, 1, 0, 2}, want_local[] = {0, 0, 1, 0};
    check(t.node == want_node[rank] && t.local_rank == want_local[rank],
          "rank " + std::to_string(rank) + ": node " + std::to_string(t.node) + " local " +
              std::to_string(t.local_rank));
    check(t.leader(0) == 0 && t.leader(1) == 1 && t.is_leader() == (rank != 2), "leaders");
    NodeTopology u =
        exchange_node_keys(rank, 4, *store_of(*base), "test/topo2", rank < 2 ? "a" : "b", 10s);
    check(u.all_keyed && u.contiguous() && u.local_size() == 2, "2 x 2: " + u.str());
    finish(*base);
  }));
}

// ---- reduce_scatter over TCP ----------------------------------------------------------

template <class T>
void reduce_scatter_case(ProcessGroup& pg, int rank, int world, ReduceOp op, int64_t block) {
  if (std::is_same_v<T, bool> && op == ReduceOp::avg) return;
  Tensor in = rank_tensor<T>(rank, block * world);
  Tensor out = pg.reduce_scatter(in.view({world, block}), op).reshape({block});
  const std::vector<T> want = reference<T>(iota_ranks(world), op, block * world);
  check_equal_bits(out.data_ptr<T>(), want, rank * block, block,
                   std::string("reduce_scatter ") + std::string(dtype_name(dtype_of<T>())) + " " +
                       reduce_op_name(op) + " block " + std::to_string(block));
}

void reduce_scatter_over_tcp(int world) {
  expect_all_passed(run_ranks(
      world,
      [world](int rank, int port) {
        setenv("LOOM_SHM", "0", 1);  // this child only: the all-TCP switch users set
        auto base = make_loopback_group(rank, world, port, 20s, false);
        check(!base->shared_memory() && !base->hierarchical(), "LOOM_SHM=0: all over TCP");
        // Multi-chunk for 1-byte dtypes: a chunk is kReduceScatterChunkBytes per peer.
        const int64_t ragged = int64_t(kReduceScatterChunkBytes) + 17;
        for (ReduceOp op : kOps) {
          for (int64_t block : {int64_t(1), int64_t(37)}) {
            reduce_scatter_case<float>(*base, rank, world, op, block);
            reduce_scatter_case<double>(*base, rank, world, op, block);
            reduce_scatter_case<Half>(*base, rank, world, op, block);
            reduce_scatter_case<BFloat16>(*base, rank, world, op, block);
            reduce_scatter_case<int64_t>(*base, rank, world, op, block);
            reduce_scatter_case<int32_t>(*base, rank, world, op, block);
            reduce_scatter_case<uint8_t>(*base, rank, world, op, block);
            reduce_scatter_case<bool>(*base, rank, world, op, block);
          }
        }
        reduce_scatter_case<uint8_t>(*base, rank, world, ReduceOp::sum, ragged);
        reduce_scatter_case<float>(*base, rank, world, ReduceOp::sum, ragged / 4 + 5);
        finish(*base);
      },
      60s));
}

TEST(ReduceScatterOverTcp, RankOrderFoldEveryDtypeAndOpTwoRanks) { reduce_scatter_over_tcp(2); }
TEST(ReduceScatterOverTcp, RankOrderFoldEveryDtypeAndOpThreeRanks) { reduce_scatter_over_tcp(3); }
TEST(ReduceScatterOverTcp, RankOrderFoldEveryDtypeAndOpFourRanks) { reduce_scatter_over_tcp(4); }

TEST(ReduceScatterOverTcp, EqualsTheSharedMemoryPathBitForBit) {
  LOOM_SKIP_WITHOUT_SHM();
  constexpr int world = 3;
  expect_all_passed(run_ranks(world, [](int rank, int port) {
    auto shm = make_loopback_group(rank, world, port, 20s);
    check(shm->shared_memory(), "shared memory on");
    auto tcp = make_group(*shm, rank, world, "tcp", {}, false);
    Tensor in = rank_tensor<float>(rank, 3 * 1001);
    Tensor a = shm->reduce_scatter(in.view({3, 1001}));
    Tensor b = tcp->reduce_scatter(in.view({3, 1001}));
    check(std::memcmp(a.data_ptr<float>(), b.data_ptr<float>(), 1001 * 4) == 0,
          "the TCP block differs from the shared-memory block");
    finish(*shm);
  }));
}

// ---- hierarchical all_reduce ------------------------------------------------------------

struct Layout {
  const char* name;
  std::vector<std::string> keys;  // per rank
  std::string topology;           // NodeTopology::str()
  std::vector<int> fold_order;    // the documented order of the ranks' contributions
};

template <class T>
void all_reduce_case(ProcessGroup& pg, int rank, const Layout& l, ReduceOp op, int64_t n) {
  if (std::is_same_v<T, bool> && op == ReduceOp::avg) return;
  Tensor t = rank_tensor<T>(rank, n);
  pg.all_reduce(t, op);
  check_equal_bits(t.data_ptr<T>(), reference<T>(l.fold_order, op, n), 0, n,
                   std::string(l.name) + ": all_reduce " + std::string(dtype_name(dtype_of<T>())) +
                       " " + reduce_op_name(op) + " of " + std::to_string(n));
}

void hierarchical_all_reduce(const Layout& l) {
  const int world = int(l.keys.size());
  expect_all_passed(run_ranks(
      world,
      [&l, world](int rank, int port) {
        auto base = make_loopback_group(rank, world, port, 20s, false, false);
        auto pg = make_group(*base, rank, world, "nodes", l.keys);
        check(pg->hierarchical(), std::string(l.name) + ": not hierarchical");
        check(!pg->shared_memory(), "no whole-group segment across nodes");
        check(pg->topology().str() == l.topology,
              "topology " + pg->topology().str() + ", expected " + l.topology);
        // Larger than a shared-memory chunk (2 MiB), ragged.
        const int64_t big = int64_t(ShmAllReduce::kSlotBytes / 4) + 1001;
        for (ReduceOp op : kOps) {
          for (int64_t n : {int64_t(1), int64_t(77)}) {
            all_reduce_case<float>(*pg, rank, l, op, n);
            all_reduce_case<double>(*pg, rank, l, op, n);
            all_reduce_case<Half>(*pg, rank, l, op, n);
            all_reduce_case<BFloat16>(*pg, rank, l, op, n);
            all_reduce_case<int64_t>(*pg, rank, l, op, n);
            all_reduce_case<int32_t>(*pg, rank, l, op, n);
            all_reduce_case<uint8_t>(*pg, rank, l, op, n);
            all_reduce_case<bool>(*pg, rank, l, op, n);
          }
          all_reduce_case<float>(*pg, rank, l, op, big);
        }
        // Coalesced (DDP's gradient buckets) goes the same way.
        Tensor a = rank_tensor<float>(rank, 300);
        Tensor out = zeros({300}, DType::f32);
        pg->all_reduce_coalesced_async(out, {a.slice(0, 0, 100), a.slice(0, 100, 300)},
                                       ReduceOp::avg)
            ->wait();
        check_equal_bits(out.data_ptr<float>(), reference<float>(l.fold_order, ReduceOp::avg, 300),
                         0, 300, std::string(l.name) + ": coalesced avg");
        // broadcast and all_gather (hierarchical too), small and over several shared-memory
        // chunks, from every root.
        for (int64_t n : {int64_t(9), int64_t(ShmAllReduce::kSlotBytes) + 5}) {
          for (int root = 0; root < world; ++root) {
            Tensor b = rank == root ? rank_tensor<uint8_t>(root, n) : zeros({n}, DType::u8);
            pg->broadcast(b, root);
            check_equal_bits(b.data_ptr<uint8_t>(), reference<uint8_t>({root}, ReduceOp::sum, n), 0,
                             n, "broadcast from " + std::to_string(root));
          }
          Tensor g = pg->all_gather(rank_tensor<uint8_t>(rank, n));
          for (int r = 0; r < world; ++r)
            check_equal_bits(g.data_ptr<uint8_t>() + n * r,
                             reference<uint8_t>({r}, ReduceOp::sum, n), 0, n,
                             "all_gather block " + std::to_string(r));
        }
        reduce_scatter_case<float>(*pg, rank, world, ReduceOp::sum, 50);
        pg->barrier();
        finish(*base);
      },
      90s));
}

TEST(HierarchicalAllReduce, TwoNodesOfTwoRanksFoldInRankOrder) {
  LOOM_SKIP_WITHOUT_SHM();
  hierarchical_all_reduce({"2 x 2", {"a", "a", "b", "b"}, "2 nodes: {0, 1} {2, 3}", {0, 1, 2, 3}});
}

TEST(HierarchicalAllReduce, TwoRanksAndOneFoldInRankOrder) {
  LOOM_SKIP_WITHOUT_SHM();
  hierarchical_all_reduce({"2 + 1", {"a", "a", "b"}, "2 nodes: {0, 1} {2}", {0, 1, 2}});
}

TEST(HierarchicalAllReduce, ThreeNodesFoldInRankOrder) {
  LOOM_SKIP_WITHOUT_SHM();
  hierarchical_all_reduce(
      {"1 + 2 + 1", {"a", "b", "b", "c"}, "3 nodes: {0} {1, 2} {3}", {0, 1, 2, 3}});
}

TEST(HierarchicalAllReduce, InterleavedNodesFoldNodeByNode) {
  LOOM_SKIP_WITHOUT_SHM();
  hierarchical_all_reduce(
      {"interleaved", {"a", "b", "a", "b"}, "2 nodes: {0, 2} {1, 3}", {0, 2, 1, 3}});
}

TEST(HierarchicalAllReduce, OffWithoutSharedMemoryOrWithOneRankPerNode) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    auto base = make_loopback_group(rank, 2, port, 20s);
    check(base->shared_memory() && !base->hierarchical(), "one host: one segment");
    check(base->topology().str() == "1 node: {0, 1}", "one node: " + base->topology().str());
    auto split = make_group(*base, rank, 2, "split", {"a", "b"});
    check(!split->shared_memory() && !split->hierarchical(),
          "one rank per node: nothing to share, all over TCP");
    auto off = make_group(*base, rank, 2, "off", {"a", "a"}, false);
    check(!off->shared_memory() && !off->hierarchical(), "shared_memory = false: all over TCP");
    finish(*base);
  }));
}

TEST(HierarchicalAllReduce, OffOnEveryRankWhenOneRankOptsOut) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(4, [](int rank, int port) {
    auto base = make_loopback_group(rank, 4, port, 20s, false, false);
    GlooOptions o;
    o.timeout = 20s;
    o.group_name = "optout";
    o.node_key = rank < 2 ? "a" : "b";
    o.shared_memory = rank != 3;
    GlooProcessGroup pg(rank, 4, store_of(*base), o);
    check(!pg.hierarchical() && !pg.shared_memory(), "rank 3 opted out: all over TCP");
    Tensor t = rank_tensor<float>(rank, 10);
    pg.all_reduce(t);  // the ranks agree on the path: this completes
    finish(*base);
  }));
}

TEST(HierarchicalAllReduce, SizeMismatchFailsOnEveryRankNamingBothCalls) {
  LOOM_SKIP_WITHOUT_SHM();
  expect_all_passed(run_ranks(4, [](int rank, int port) {
    auto base = make_loopback_group(rank, 4, port, 20s, false, false);
    auto pg = make_group(*base, rank, 4, "nodes", {"a", "a", "b", "b"});
    Tensor t = zeros({rank == 3 ? 5 : 4}, DType::f32);
    try {
      pg->all_reduce(t);
      check(false, "a size mismatch went through");
    } catch (const CallMismatch& e) {
      const std::string msg = e.what();
      check(msg.find("[4]") != std::string::npos && msg.find("[5]") != std::string::npos,
            "the message names both calls: " + msg);
    }
    Tensor ok = ones({3}, DType::f32);  // the group stays usable
    pg->all_reduce(ok);
    check(ok.data_ptr<float>()[0] == 4.0f, "all_reduce after the mismatch");
    finish(*base);
  }));
}

TEST(HierarchicalAllReduce, DeadLeaderFailsEveryOtherRankWithinTheTimeout) {
  LOOM_SKIP_WITHOUT_SHM();
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_ranks(
      4,
      [](int rank, int port) {
        auto base = make_loopback_group(rank, 4, port, 20s, false, false);
        GlooOptions o;
        o.timeout = 5s;
        o.group_name = "nodes";
        o.node_key = rank < 2 ? "a" : "b";
        GlooProcessGroup pg(rank, 4, store_of(*base), o);
        check(pg.hierarchical(), "hierarchical");
        if (rank == 2) _exit(0);  // node b's leader dies before the collective
        Tensor t = ones({1000}, DType::f32);
        try {
          pg.all_reduce(t);
        } catch (const RuntimeError&) {
          _exit(3);  // the expected end: a named error
        }
        check(false, "all_reduce with a dead leader did not fail");
      },
      30s);
  for (int r : {0, 1, 3})
    EXPECT_EQ(errors[size_t(r)], "exited abnormally, status " + std::to_string(3 << 8))
        << "rank " << r;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 15s);
}

}  // namespace
}  // namespace loom::dist
