// GlooProcessGroup: the CPU backend of dist::ProcessGroup, collectives over Gloo's TCP transport.
//
// Construction rendezvouses through a TCPStore (GlooStore adapter, keys under
// "pg/<group_name>/") and connects a full mesh of TCP pairs, so every rank of the group must
// construct it with the same group_name; several groups with different names share one store.
//
// Every operation is queued to ONE worker thread per group and runs in issue order; the async
// forms return a Work, the blocking forms of ProcessGroup wait on it. Issue order is the only
// thing that matches rank A's n-th collective with rank B's n-th collective, so all ranks must
// issue the same collectives in the same order (debug mode checks exactly that, below).
//
// Same-host fast path: when every rank of the group maps one POSIX shared-memory segment at
// construction (dist/shm_all_reduce.h; all ranks on one host, none opted out), all_reduce and
// reduce_scatter of f32/f64/i64/i32 (and the f32 buffers of widened f16/bf16), and broadcast
// and all_gather of any dtype, run through it instead of Gloo's TCP loopback, on the same
// worker thread in the same issue order. shared_memory() says whether it is on;
// GlooOptions::shared_memory = false or LOOM_SHM=0 turns it off.
//
// Dtypes: f64/f32/i64/i32/u8 are reduced natively by Gloo (u8 sums wrap modulo 256); f16/bf16
// are widened into an f32 scratch buffer, reduced in f32 and rounded back once; bool reduces as
// logical or (sum, max) / and (min). avg is sum then divide by size(); for integer dtypes the
// division floors (toward negative infinity, as Python's //), so avg of {-1, 0} is -1.
// broadcast and all_gather move bytes and take every dtype.
//
// all_gather and reduce_scatter between ranks of one host go through the shared-memory
// segment too (reduce_scatter: each rank reduces only its own block, 1/size() of an
// all_reduce's work). Over TCP, reduce_scatter is a direct exchange (dist/gloo_reduce_scatter.h):
// each rank sends block p of its input to rank p and folds the blocks it receives in rank
// order, so it moves (size - 1) / size of the input per rank, half of a ring all_reduce, and
// its block equals the shared-memory path's bit for bit.
//
// Note [Hierarchical all_reduce]: at construction every rank publishes a node key (GlooOptions
// ::node_key, by default local_node_key(): boot id and /dev/shm identity, dist/node_topology.h).
// One node: the whole-group segment above. Several nodes, every rank willing: one segment per
// node of two or more ranks, and all_reduce of f32/f64/i64/i32 (f16/bf16 widened to f32) runs
//   1. leader of node k > 0 (its lowest rank) receives the fold of nodes 0..k-1 from leader
//      k-1 and folds its own data onto it;
//   2. the node folds over shared memory, the leader's (continued) data first;
//   3. leader k < last sends that to leader k+1; the last leader then holds the whole fold and
//      sends it to every other leader, which broadcasts it in its node over shared memory;
//   4. avg divides once, by size(), on every rank.
// So the fold is the nodes in order of their lowest rank, each node's ranks ascending:
// with consecutive ranks per node (loomrun's layout) exactly the rank-order fold of one host,
// bit for bit equal to a single-host run of the same ranks; in any case the same on every rank
// and fixed for a fixed topology. Only leaders use TCP for it: per all_reduce of S bytes a
// leader sends and receives S at most (the last sends S to each other leader). The chain is
// pipelined in chunks of kHierarchicalChunkBytes (1 MiB), so its stages overlap.
// broadcast: within src's node over shared memory to its leader, from that leader to every
// other leader, then within each node from its leader. all_gather: each node gathers over
// shared memory, leaders swap their nodes' blocks, each leader broadcasts the whole output in
// its node. u8 and bool all_reduce and barrier stay on Gloo over all ranks. reduce_scatter is
// the direct exchange above over all ranks (TCP loopback within a node; its fold is rank
// order): each rank sends every rank of another node that rank's block, so a node of L ranks
// sends L x (its remote share) of an input. A node-aware form (the all_reduce chain on a copy,
// sending back only each node's blocks) would send about one input per link whatever L: no
// gain for 2 ranks per node, a large one for many; not written yet. Each collective first
// runs the call check over Gloo (Note [Call check over Gloo]), across nodes.
// LOOM_SHM=0 turns all of it off (every collective over TCP); so does a node whose segment
// cannot be created, on every rank.
//
// Errors: bad arguments throw ValueError from the *_async call itself (nothing is queued);
// failures while running (a dead peer, a timeout, any exception out of Gloo) are rethrown by
// Work::wait() as RuntimeError naming the group, this rank, the collective, the time waited
// and the timeout. After such a failure the group's connections are in an unknown state:
// later operations on it fail too (create a new group). Every wait honours the configured
// timeout, the first connection included (Gloo's pairs would wait 5 x; see the constructor).
//
// Note [Call check over Gloo]: before each collective that runs over Gloo's TCP pairs (no
// shared memory, no debug mode), the ranks all_gather a fixed 128-byte record of their call
// (sequence number, the fingerprint below and its hash). Ranks whose calls differ (a size
// mismatch, a skipped or added collective) all throw before any data moves, naming rank 0's
// call and the first differing rank's, as dist::CallMismatch (a RuntimeError, no rank died);
// the group stays usable. Without it, Gloo's event-loop
// thread meets mismatched buffer sizes with an uncaught gloo::EnforceNotMet that terminates
// the process. It costs one small all_gather (a round trip) per TCP collective. With shared
// memory on, the same record goes into the shared segment instead (ShmAllReduce Note [Call
// records]): a shared-memory collective compares the records at its first barrier, and a
// collective that runs over Gloo is preceded by one shared-memory barrier that compares them,
// so any mix of shared-memory and Gloo collectives fails at the first differing call.
//
// A peer dying mid-transfer must not kill this rank: the group's threads (Gloo's event loop,
// the worker) start with SIGPIPE blocked, so writes to a closed socket fail with EPIPE and
// become RuntimeErrors. The process-wide SIGPIPE disposition is left alone.
//
// Note [Debug collectives]: with LOOM_DEBUG_COLLECTIVES=1 (or options.debug = true), before
// each collective every rank publishes a fingerprint "<op>(<dtype>, <shape>, <arg>)" under the
// store key "pg/<group_name>/fp/<seq>/<rank>" and waits for all ranks' fingerprints. A
// difference throws on every rank, naming what each rank called; a rank that never publishes
// within the timeout is named as missing. It costs size() + 2 store round-trips per collective
// (about 0.3 ms on loopback with 2 ranks): a diagnosis tool, not for production runs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "dist/node_topology.h"
#include "dist/process_group.h"
#include "dist/tcp_store.h"

namespace gloo {
class Context;
}

namespace loom::dist {

struct GlooOptions {
  // Bound on every operation (and on the rendezvous at construction).
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  // Separates groups that share one store; every rank of a group must pass the same name.
  std::string group_name = "default";
  // Address peers use to reach this rank's Gloo device; empty: this host's name as resolved by
  // Gloo (needs a resolvable hostname on multi-node jobs). "127.0.0.1" for single-node jobs;
  // init_process_group passes dist::advertised_address() (init.h).
  std::string hostname = "127.0.0.1";
  // Note [Debug collectives]; unset: LOOM_DEBUG_COLLECTIVES=1 in the environment turns it on.
  std::optional<bool> debug;
  // The shared-memory all_reduce between ranks on one host; unset: on unless LOOM_SHM is "0"
  // or "false". A rank that opts out turns it off for the whole group.
  std::optional<bool> shared_memory;
  // Which node (shared-memory domain) this rank is on, compared between ranks; unset:
  // local_node_key() (dist/node_topology.h). Tests set it to lay out several "nodes" on one
  // host; ranks with equal keys must be able to open each other's /dev/shm segments.
  std::optional<std::string> node_key;
};

// True when LOOM_DEBUG_COLLECTIVES is set to a value other than "", "0" or "false" (any case).
bool debug_collectives_from_env();
// False when LOOM_SHM is "0" or "false" (any case); true otherwise, unset included.
bool shared_memory_from_env();

class ShmAllReduce;

class GlooProcessGroup : public ProcessGroup {
 public:
  // Blocks until all `size` ranks have connected (or options.timeout passes: RuntimeError).
  GlooProcessGroup(int rank, int size, std::shared_ptr<TCPStore> store, GlooOptions options = {});
  GlooProcessGroup(int rank, int size, std::shared_ptr<TCPStore> store,
                   std::chrono::milliseconds timeout);
  // Finishes the queued operations, then stops the worker.
  ~GlooProcessGroup() override;
  GlooProcessGroup(const GlooProcessGroup&) = delete;
  GlooProcessGroup& operator=(const GlooProcessGroup&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "gloo"; }
  bool debug() const { return debug_; }
  // Whether the collectives go through shared memory (same host, see the header comment).
  bool shared_memory() const { return shm_ != nullptr; }
  // Whether the ranks span several nodes and all_reduce is hierarchical (Note [Hierarchical
  // all_reduce]); topology() says which ranks share a node (with shared memory off on some
  // rank, that rank is a node of its own: NodeTopology::all_keyed).
  bool hierarchical() const { return hierarchical_; }
  const NodeTopology& topology() const { return topology_; }
  const std::string& group_name() const { return group_name_; }
  // GlooOptions::hostname: the address this rank advertised to its peers.
  const std::string& address() const { return address_; }
  const std::shared_ptr<TCPStore>& store() const { return store_; }

  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override;
  std::shared_ptr<Work> broadcast_async(const Tensor& t, int src) override;
  std::shared_ptr<Work> all_gather_async(const Tensor& out, const Tensor& t) override;
  std::shared_ptr<Work> reduce_scatter_async(const Tensor& out, const Tensor& input,
                                             ReduceOp op) override;
  std::shared_ptr<Work> barrier_async() override;
  // With the shared-memory path, the parts are read straight into the shared slots (no
  // gather into output first); otherwise ProcessGroup's default.
  std::shared_ptr<Work> all_reduce_coalesced_async(const Tensor& output,
                                                   const std::vector<Tensor>& parts,
                                                   ReduceOp op) override;

 private:
  class GlooWork;
  struct Task {
    std::string description;  // the fingerprint, e.g. "all_reduce(f32, [4, 4], sum)"
    std::function<void(uint32_t tag)> run;
    std::shared_ptr<GlooWork> work;
    bool uses_shm = false;  // runs through shm_ (which then checks the call itself)
  };

  std::shared_ptr<Work> enqueue(std::string description, std::function<void(uint32_t)> run,
                                bool uses_shm = false);
  // Whether an all_reduce (or reduce_scatter) of `dtype` with `op` runs through shm_.
  bool reduces_in_shm(DType dtype, ReduceOp op) const;
  void worker_loop();
  void run_task(Task& task, uint64_t seq);
  // Note [Call check over Gloo]: exchanges this rank's call with every rank's through a
  // fixed-size all_gather; returns the mismatch message, empty when all ranks agree.
  std::string check_call_over_gloo(uint64_t seq, const std::string& description);
  // The all_gather tag of check_call_over_gloo (the collectives' tags are their seq from 1).
  static constexpr uint32_t kCallCheckTag = 0;
  // Note [Debug collectives]: throws RuntimeError on a mismatch or a missing rank.
  void check_fingerprints(uint64_t seq, const std::string& description);
  // The ops proper, run on the worker thread.
  void run_all_reduce(void* data, int64_t numel, DType dtype, ReduceOp op, uint32_t tag);
  // f32/f64/i64/i32 through shared memory when it is on, else through Gloo.
  template <class T>
  void reduce_native(T* data, int64_t numel, ReduceOp op, uint32_t tag);
  void run_broadcast(void* data, int64_t nbytes, int src, uint32_t tag);
  void run_all_gather(void* out, const void* in, int64_t nbytes, uint32_t tag);
  // Shared memory where it takes the dtype (f16/bf16 widened to f32), else Gloo: out gets
  // this rank's `block` elements of the reduction of `in` (size() blocks).
  void run_reduce_scatter(const void* in, void* out, int64_t block, DType dtype, ReduceOp op,
                          uint32_t tag);
  void run_barrier(uint32_t tag);
  // Note [Hierarchical all_reduce]: f32/f64/i64/i32 in place (dist/hierarchical_all_reduce.cpp).
  void run_hierarchical_all_reduce(void* data, int64_t numel, DType dtype, ReduceOp op,
                                   uint32_t tag);
  // Note [Hierarchical all_reduce], broadcast and all_gather: bytes of any dtype.
  void run_hierarchical_broadcast(void* data, int64_t nbytes, int src, uint32_t tag);
  void run_hierarchical_all_gather(void* out, const void* in, int64_t nbytes, uint32_t tag);
  // Multi-node set-up: the node-local segments and the all-or-nothing decision (constructor).
  void set_up_node_shared_memory();

  int rank_;
  int size_;
  std::shared_ptr<TCPStore> store_;
  std::string group_name_;
  std::string address_;
  bool debug_;
  std::shared_ptr<gloo::Context> context_;
  std::unique_ptr<ShmAllReduce> shm_;  // null: every all_reduce goes through Gloo
  NodeTopology topology_;              // one node of every rank unless keys were exchanged
  std::unique_ptr<ShmAllReduce> node_shm_;  // this node's ranks, when hierarchical_
  bool hierarchical_ = false;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  std::thread worker_;  // last: started once everything above exists
};

}  // namespace loom::dist
