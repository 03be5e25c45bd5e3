// ShmAllReduce: all_reduce (and broadcast, all_gather, reduce_scatter) between the processes
// of one host through a POSIX shared-memory segment, the intra-node fast path of
// GlooProcessGroup (as NCCL does within a node). Gloo's TCP transport over loopback moves
// every byte through the kernel twice and wakes a thread per message; here each rank copies
// its data once into shared memory and reads the others' directly.
//
// What it is not: a general transport. Only all_reduce and reduce_scatter of f32/f64/i64/i32
// with sum/avg/max/min (supports()), and broadcast and all_gather of bytes; GlooProcessGroup
// also sends here the f32 buffers it widens f16/bf16 into, and keeps every other collective
// and dtype (u8, bool reductions, barrier) on Gloo. It is not thread-safe: GlooProcessGroup calls it only from its one
// worker thread, in issue order.
//
// Setup (try_create, collective, after Gloo's full mesh exists): rank 0 creates
// "/loom-<pid>-<random>", reserves its pages with posix_fallocate (a full /dev/shm fails
// here with ENOSPC instead of a SIGBUS on first touch later), maps it and writes a random
// 64-bit token; name and token go through the store. The other ranks open the name and check
// the token: a rank on another host, or in another /dev/shm namespace, cannot open it or sees
// another token. Every rank publishes ok or why not; all ranks read all statuses, so they all
// decide the same (a split decision would pair shm barriers with Gloo messages and hang).
// Then rank 0 unlinks the name: the mapping lives on while mapped, and nothing is left in
// /dev/shm even when a process is SIGKILLed later (only a kill inside the few milliseconds of
// setup can leave "/dev/shm/loom-<pid>-*" behind).
//
// Segment layout (S = size, B = kSlotBytes):
//   Control            one cache line each for the barrier counter and the futex word
//   PeerState[S]       a few cache lines per rank: barrier arrivals, call records, pid
//   slots[2][S][B]     two sets of per-rank slots, used alternately by successive chunks
//
// Algorithm, per chunk of at most B bytes (slot set k = chunk counter mod 2):
//   1. every rank copies its chunk into its own slot k[rank];            barrier
//   2. rank r reduces part r of the chunk (the chunk split into S parts, 64-byte aligned)
//      over slots k[0..S-1] in rank order into its output, applies avg, and publishes it
//      into k[r] part r (no other rank reads that part of k[r] in this phase);  barrier
//   3. every rank copies part p of k[p] into its output for every p != r.
// Two slot sets remove the barrier before reuse: a rank writes set k again in chunk c + 2
// only after the barrier 1 of chunk c + 1, which every rank reaches after finishing step 3 of
// chunk c. So 2 barriers per chunk; the chunk counter runs across calls.
// Every element is combined in rank order ((x0 + x1) + x2 ...), whichever rank owns its part,
// so results do not depend on the partition; with 2 ranks they equal Gloo's bit for bit.
//
// Note [Shm barrier]: a counter and a generation word in the segment (lock-free std::atomic
// works across processes). The last arriver resets the counter and bumps the generation;
// waiters spin kSpinIterations pauses (a barrier between ranks that are both running
// completes within microseconds), then sleep in FUTEX_WAIT on the generation (shared, not
// _PRIVATE: the word is in several processes) in slices of kWaitSlice. Spinning longer would
// steal the core from the rank's own main thread, which on a 2-core machine is computing
// backward while this worker waits. The waker calls FUTEX_WAKE only when someone sleeps.
//
// Failures: every barrier waits at most the group's timeout, then throws RuntimeError naming
// the ranks that had not arrived (per-rank arrival counts in PeerState). Between slices the
// waiter also checks whether a missing rank's process has exited (/proc/<pid>/stat: gone, a
// zombie, or a new process under that pid) and fails at once, as Gloo does when a peer's
// socket closes. A rank whose pid cannot be verified at setup (another pid namespace) is only
// covered by the timeout. After a failure the barrier counts are out of step: the group is
// broken, as after a Gloo failure. Ranks calling all_reduce with different numel, dtype or op
// (or, with set_call, a different sequence number or description) all throw at the first
// barrier, naming each rank's call (a cheap check, a few cache lines per rank), and the group
// stays usable.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/process_group.h"
#include "dist/tcp_store.h"
#include "core/dtype.h"
#include "core/error.h"

namespace loom::dist {

// What ShmAllReduce throws when the ranks' calls differ (nothing else is wrong: no rank
// died, the group stays usable).
struct CallMismatch : RuntimeError {
  using RuntimeError::RuntimeError;
};

class ShmAllReduce {
 public:
  // Bytes per rank per slot set. Large enough that the two barriers per chunk are amortised:
  // inside DDP the peer is often still computing, so a barrier often means a futex sleep and
  // a wake-up of tens of us. Small enough that a chunk's S slots stay in L2/L3 while they
  // are reduced and copied out. Alone (bench_allreduce, 2 ranks, 7.5 MB) 512 KiB was best:
  // 0.67 ms against 0.84 (1 MiB) and 1.43 (4 MiB). Inside DDP (bench_ddp, 2 ranks x 1
  // thread, overhead per step over no_sync, MLP / 100-layer model) 2 MiB wins: 512 KiB
  // +4.0-4.3 / +4.0-4.4 ms, 2 MiB +2.2-2.5 / +2.4, 4 MiB +2.2 / +2.3-3.4. The segment is
  // 2 * S * kSlotBytes plus a page or two: 8 MiB for 2 ranks, below Docker's 64 MiB /dev/shm.
  static constexpr size_t kSlotBytes = size_t(1) << 21;
  // Pause instructions before sleeping in a barrier (~5 us on Zen; Note [Shm barrier]).
  static constexpr int kSpinIterations = 256;
  // Longest single FUTEX_WAIT: the deadline and the peers' liveness are rechecked this often.
  static constexpr std::chrono::milliseconds kWaitSlice{5};

  // COLLECTIVE: every rank of the group calls it with the same key_prefix (a store namespace
  // of its own, e.g. "pg/<group>/shm"). Returns the fast path when every rank mapped the
  // same segment, else nullptr on every rank; `why_not` (optional) then gets the first failing
  // rank's reason. `wanted` false opts this rank out (the others then get nullptr too). size 1
  // returns nullptr without touching the store. Store timeouts throw RuntimeError.
  static std::unique_ptr<ShmAllReduce> try_create(int rank, int size, TCPStore& store,
                                                  const std::string& key_prefix,
                                                  std::chrono::milliseconds timeout,
                                                  bool wanted = true,
                                                  std::string* why_not = nullptr);
  ~ShmAllReduce();
  ShmAllReduce(const ShmAllReduce&) = delete;
  ShmAllReduce& operator=(const ShmAllReduce&) = delete;

  static bool supports(DType dtype, ReduceOp op);
  // In place over `numel` contiguous elements; every rank passes the same numel, dtype, op.
  // avg is sum times 1 / size for floats and floor division by size for integers (as the
  // Gloo path). Throws RuntimeError on a timeout, a dead peer or mismatched calls.
  void run(void* data, int64_t numel, DType dtype, ReduceOp op);
  // out = the reduction of the concatenated parts (numels adding up to numel). A part may
  // alias out at its own offset, nowhere else (ProcessGroup::all_reduce_coalesced_async):
  // each chunk of the input is copied into the slots before that chunk of out is written.
  struct Segment {
    const void* data;
    int64_t numel;
  };
  void run(const Segment* parts, size_t n_parts, void* out, int64_t numel, DType dtype,
           ReduceOp op);

  // Copies root's `nbytes` at data into every other rank's data, chunk by chunk through
  // root's slots (one barrier per chunk). Any dtype: bytes are bytes.
  void broadcast(void* data, int64_t nbytes, int root);

  // out (size() * nbytes bytes) = every rank's `nbytes` at `in`, in rank order: each rank
  // copies a chunk into its slot, then all slots out (one barrier per chunk, the two slot
  // sets as in broadcast). Any dtype. `in` may be out's block of this rank.
  void all_gather(void* out, const void* in, int64_t nbytes);

  // out (`block` elements) = the reduction over ranks of block rank() of each rank's `in`
  // (size() blocks of `block` elements, one per destination rank). Per chunk every rank
  // copies its slice of every block into its slot, then reduces its own block's slices over
  // all slots in rank order: the same combination order as run(), so a rank's block equals
  // that block of an all_reduce bit for bit, for 1/size() of all_reduce's traffic. Dtypes and
  // ops as supports(); avg as in run(). One barrier per chunk. `out` may be `in`'s block of
  // this rank, nowhere else in it.
  void reduce_scatter(const void* in, void* out, int64_t block, DType dtype, ReduceOp op);

  // Note [Call records]: what the caller is about to call, recorded with the next
  // collective's call record: its sequence number in the caller's stream of collectives and
  // its description (first kCallTextBytes - 1 bytes). The first barrier of a call compares
  // every rank's record, so a rank that skipped or added a collective, or called another one,
  // fails on every rank at that call, naming rank 0's call and the first differing rank's.
  void set_call(uint64_t seq, const std::string& description);
  // A call record and one barrier, nothing else: GlooProcessGroup runs it before each
  // collective that goes over Gloo while shared memory is on, so every collective of the
  // group, whichever transport runs it, is matched at its first differing call.
  void check_call(uint64_t seq, const std::string& description);
  static constexpr size_t kCallTextBytes = 96;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // The segment's name, already unlinked once try_create returned.
  const std::string& name() const { return name_; }

 private:
  // PeerState::Call::op of the other collectives (all_reduce's is its ReduceOp, 0-3): an
  // all_gather, a reduce_scatter with ReduceOp o, a broadcast from root r.
  static constexpr int kAllGatherOp = 8;
  static constexpr int kReduceScatterOpBase = 12;
  static constexpr int kBroadcastOpBase = 16;
  static constexpr int kCheckOnlyOp = 9;  // check_call
  struct Control;
  struct PeerState;
  class Mapping;

  ShmAllReduce(int rank, int size, std::unique_ptr<Mapping> mapping, std::string name,
               std::chrono::milliseconds timeout);
  static size_t header_bytes(int size);   // Control + PeerState[size], whole pages
  static size_t segment_bytes(int size);  // header + both slot sets
  Control& control() const;
  PeerState& peer(int r) const;
  unsigned char* slot(int set, int r) const;
  template <class T>
  void run_typed(const Segment* parts, size_t n_parts, T* data, int64_t numel, ReduceOp op);
  template <class T>
  void reduce_scatter_typed(const T* in, T* out, int64_t block, ReduceOp op);
  // Publishes this rank's next call (its parity's PeerState::Call) for check_same_call; op
  // is a ReduceOp or kBroadcastOpBase + root.
  void begin_call(int64_t numel, DType dtype, uint32_t op);
  // Throws when the ranks' current calls differ (after the first barrier of a call).
  void check_same_call() const;
  // Note [Shm barrier].
  void barrier();
  // Ranks that have not yet entered barrier number barriers_.
  std::vector<int> missing_ranks() const;
  // Throws when a watched missing rank's process has exited.
  void check_missing_alive() const;
  [[noreturn]] void fail_waiting(const std::vector<int>& ranks, const std::string& why) const;

  int rank_;
  int size_;
  std::unique_ptr<Mapping> mapping_;
  std::string name_;
  std::chrono::milliseconds timeout_;
  uint64_t barriers_ = 0;      // barriers this rank has entered; PeerState::arrived mirrors it
  uint64_t chunks_ = 0;        // chunks run so far, across calls; its parity picks the slot set
  uint64_t calls_ = 0;         // run() calls with numel > 0; its parity picks PeerState::call
  uint64_t next_seq_ = 0;      // set_call's, for the next begin_call
  std::string next_what_;
  std::vector<bool> watched_;  // per rank: its pid was verified in /proc at setup
};

}  // namespace loom::dist
