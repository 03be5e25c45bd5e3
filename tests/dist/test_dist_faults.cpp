// Faults between ranks end in a named loom::RuntimeError within the configured timeout, never
// an uncaught exception or a hang: mismatched sizes over TCP, a missing peer, a duplicate
// RANK, a rank that skipped a collective.
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "dist/forked_ranks.h"
#include "dist/gloo_store.h"
#include "core/error.h"
#include "tensor/factories.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

constexpr int kWorld = 2;

bool has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

TEST(DistFaults, SizeMismatchOverTcpIsANamedErrorOnEveryRank) {
  expect_all_passed(run_ranks(kWorld, [](int rank, int port) {
    auto pg = make_loopback_group(rank, kWorld, port, 2s, /*debug=*/false,
                                  /*shared_memory=*/false);
    Tensor t = zeros({int64_t(rank == 0 ? 4 : 8)}, DType::f32);
    const auto start = std::chrono::steady_clock::now();
    try {
      pg->all_reduce(t);
      check(false, "mismatched all_reduce sizes did not throw");
    } catch (const RuntimeError& e) {
      const std::string msg = e.what();
      check(has(msg, "rank " + std::to_string(rank) + "/2: collective #1 mismatch: rank 0 called "
                     "all_reduce(f32, [4], sum) but rank 1 called all_reduce(f32, [8], sum)"),
            "unexpected message: " + msg);
      check(seconds_since(start) < 1.0, "the mismatch took " +
                                            std::to_string(seconds_since(start)) + " s");
    }
    // The group stays usable: the data never went out.
    Tensor ok = full({3}, 1.0, DType::f32);
    pg->all_reduce(ok);
    check_values(ok, {2, 2, 2}, "the next collective");
    finish(*pg);
  }, 15s));
}

// A Gloo rendezvous store that stops its process (SIGSTOP) once it has published its pair
// addresses: its peers see a rank that joined and then never connects.
class StopAfterSet : public GlooStore {
 public:
  using GlooStore::GlooStore;
  void set(const std::string& key, const std::vector<char>& data) override {
    GlooStore::set(key, data);
    if (key == "0") raise(SIGSTOP);  // rank 0's pair addresses (not its "rank_0" host key)
  }
};

// Gloo's TCP pairs wait 5 x the context's timeout for a peer's first connection. Process 0
// plays Gloo rank 0 and stops after publishing its addresses; process 1 is a real rank 1;
// process 2 hosts the store, so the stop freezes no store. Of a pair, the side with the
// greater address waits for the other's connection (ports are the kernel's choice); when
// process 1 connects instead, the rank's next wait (the shared-memory handshake through the
// store) is the one that fails. Either way: a named error within 1.5 x the timeout, stating
// the time waited. Returns the message.
std::string stopped_peer_at_connect(int attempt) {
  const std::string group = "g" + std::to_string(attempt);
  std::string result;
  auto errors = run_ranks(3, [&](int proc, int port) {
    auto store = std::make_shared<TCPStore>("127.0.0.1", port, 0, proc == 2, 5s);
    if (proc == 2) {  // the store's host, until process 1 is done
      store->wait({"test/done"}, 10s);
      return;
    }
    if (proc == 0) {
      store->set("test/pid", std::to_string(getpid()));
      StopAfterSet gloo_store(store, "pg/" + group + "/gloo");
      gloo::transport::tcp::attr attr;
      attr.hostname = "127.0.0.1";
      auto device = gloo::transport::tcp::CreateDevice(attr);
      gloo::rendezvous::Context context(0, kWorld);
      context.connectFullMesh(gloo_store, device);  // stops inside; process 1 kills it
      return;
    }
    const pid_t peer = pid_t(std::stoi(store->get_string("test/pid")));
    GlooOptions options;
    options.timeout = 1000ms;
    options.shared_memory = false;
    options.group_name = group;
    const auto start = std::chrono::steady_clock::now();
    std::string msg;
    try {
      GlooProcessGroup pg(1, kWorld, store, options);
    } catch (const RuntimeError& e) {
      msg = e.what();
    }
    const double took = seconds_since(start);
    kill(peer, SIGKILL);
    store->set("test/done", "1");
    check(!msg.empty(), "connecting to a stopped peer did not throw");
    check(took < 1.5, "the error came after " + std::to_string(took) + " s: " + msg);
    const bool at_connect = has(msg, "rank 1/2: connecting the full mesh failed after ");
    check(at_connect || has(msg, "rank 1/2: shared-memory setup failed: TCPStore"),
          "unexpected message: " + msg);
    // The time it states is the time it waited.
    const std::string marker = at_connect ? "failed after " : "timed out after ";
    check(has(msg, at_connect ? " ms (timeout 1000 ms)" : "timed out after 1000 ms"),
          "unexpected message: " + msg);
    const double stated = std::stod(msg.substr(msg.find(marker) + marker.size())) / 1000;
    check(stated >= 0.9 && stated <= took + 0.05,
          "stated " + std::to_string(stated) + " s, waited " + std::to_string(took) + " s");
    // Hand the message to the parent through the error channel, marked as a pass.
    throw CheckFailed("PASS " + msg);
  }, 15s);
  EXPECT_NE(errors[0].find("status 9"), std::string::npos) << errors[0];
  EXPECT_EQ(errors[1].rfind("PASS ", 0), 0u) << errors[1];
  EXPECT_EQ(errors[2], "");
  return errors[1];
}

TEST(DistFaults, StoppedPeerAtConnectFailsWithinTheConfiguredTimeout) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    const std::string msg = stopped_peer_at_connect(attempt);
    if (HasFailure()) return;
    if (has(msg, "connecting the full mesh failed")) return;  // Gloo's own wait was bounded
  }
  GTEST_SKIP() << "process 1 never drew the waiting side of the pair in 8 attempts";
}

// Three processes, world size 3, RANKs 0, 1, 1: every process fails at once, the two
// claimants naming each other, rank 0 with the same message (Note [Rank claims] in init.h).
TEST(DistFaults, DuplicateRankFailsAtOnceNamingBothProcesses) {
  auto errors = run_ranks(3, [](int proc, int port) {
    const int rank = proc == 2 ? 1 : proc;
    ProcessGroupOptions o;
    o.rank = rank;
    o.world_size = 3;
    o.master_addr = "127.0.0.1";
    o.master_port = port;
    o.timeout = 5s;
    o.shared_memory = false;
    const auto start = std::chrono::steady_clock::now();
    std::string msg;
    try {
      init_process_group(o);
    } catch (const RuntimeError& e) {
      msg = e.what();
    }
    const double took = seconds_since(start);
    check(!msg.empty(), "a duplicate RANK was not detected");
    check(took < 2.0, "the error came after " + std::to_string(took) + " s: " + msg);
    throw CheckFailed("MSG " + msg);
  }, 15s);
  for (size_t p = 0; p < errors.size(); ++p) {
    const std::string& msg = errors[p];
    EXPECT_EQ(msg.rfind("MSG ", 0), 0u) << "process " << p << ": " << msg;
    EXPECT_NE(msg.find("RANK 1 was claimed by two processes: pid "), std::string::npos) << msg;
    EXPECT_NE(msg.find(" (first) and pid "), std::string::npos) << msg;
  }
  // Every process reports the same conflict.
  EXPECT_EQ(errors[0], errors[1]);
  EXPECT_EQ(errors[1], errors[2]);
}

// A training-like loop where rank 1 skips one collective: every rank fails at that very call
// (not at a timeout, not steps later) with a message naming both ranks' calls, whether the
// group runs over shared memory, over TCP, or in debug mode, and whether the skipped call is a
// shared-memory all_reduce or a Gloo barrier.
struct SkipCase {
  std::optional<bool> shared_memory;
  bool debug;
  bool skip_barrier;  // else rank 1 skips the gradient all_reduce of step 2
};

void rank_skips_one_collective(const SkipCase& c) {
  expect_all_passed(run_ranks(kWorld, [c](int rank, int port) {
    auto pg = make_loopback_group(rank, kWorld, port, 5s, c.debug, c.shared_memory);
    check(pg->shared_memory() == c.shared_memory.value_or(true), "unexpected transport");
    const auto start = std::chrono::steady_clock::now();
    std::string msg;
    int step = 0;
    try {
      for (; step < 8; ++step) {
        Tensor grad = full({8}, 1.0, DType::f32);
        Tensor loss = full({1}, 2.0, DType::f32);
        if (!(rank == 1 && step == 2 && !c.skip_barrier)) pg->all_reduce(grad);
        if (c.skip_barrier) {
          if (!(rank == 1 && step == 1)) pg->barrier();
        } else {
          pg->all_reduce(loss, ReduceOp::avg);
        }
      }
    } catch (const RuntimeError& e) {
      msg = e.what();
    }
    const double took = seconds_since(start);
    check(!msg.empty(), "a skipped collective was not detected");
    check(took < 2.0, "detected after " + std::to_string(took) + " s: " + msg);
    // The call: step 2's gradient all_reduce (#5), or step 1's barrier (#4) against rank 1's
    // step 2 all_reduce.
    const std::string seq = c.skip_barrier ? "#4" : "#5";
    check(step == (c.skip_barrier ? (rank == 0 ? 1 : 2) : 2),
          "failed at step " + std::to_string(step) + ": " + msg);
    const std::string first = c.skip_barrier ? "barrier()" : "all_reduce(f32, [8], sum)";
    const std::string second =
        c.skip_barrier ? "all_reduce(f32, [8], sum)" : "all_reduce(f32, [1], avg)";
    check(has(msg, "collective " + seq + " mismatch") && has(msg, "rank 0 called " + first) &&
              has(msg, "but rank 1 called " + second),
          "unexpected message: " + msg);
    check(!has(msg, "may have died"), "a mismatch is not a dead rank: " + msg);
    finish(*pg);
  }, 15s));
}

TEST(DistFaults, SkippedAllReduceOverSharedMemoryFailsAtThatCall) {
  rank_skips_one_collective({std::nullopt, false, false});
}
TEST(DistFaults, SkippedBarrierAmongSharedMemoryCollectivesFailsAtThatCall) {
  rank_skips_one_collective({std::nullopt, false, true});
}
TEST(DistFaults, SkippedCollectiveOverTcpFailsAtThatCall) {
  rank_skips_one_collective({false, false, false});
  rank_skips_one_collective({false, false, true});
}
TEST(DistFaults, DebugModeCatchesASkipInAnyMixOfTransports) {
  rank_skips_one_collective({std::nullopt, true, false});
  rank_skips_one_collective({std::nullopt, true, true});
}

}  // namespace
}  // namespace loom::dist
