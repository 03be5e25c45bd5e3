// init_process_group: the bootstrap every rank of a job calls once to get its ProcessGroup.
//
// Rank 0 hosts the rendezvous TCPStore at master_port (listening on all interfaces; 0 picks a
// free port, only useful when the other ranks learn it some other way, e.g. tests); every rank
// connects to master_addr:master_port, registers, and waits until world_size ranks joined
// (the world-size check). Then the backend's group is built over that store.
//
// Failures surface as loom::RuntimeError from the store with what to check: the port is
// already taken (choose another MASTER_PORT), a rank did not join within the timeout (only k
// of n joined), more ranks than world_size joined, or the port answers but is not a store.
//
// Note [Rank claims]: before the backend's group, every rank registers its RANK with its pid
// and host name (register_rank). A second process claiming a RANK fails at once and publishes
// the conflict; every other rank polls for it while waiting for all ranks to register, so the
// whole job fails within milliseconds naming both processes, instead of timing out later in
// Gloo's rendezvous on the key of the rank nobody took.
//
// The store stays alive as long as the group (the group holds it), and store_of(group) hands
// it out for rendezvous-level barriers and launchers. Rank 0's process hosts it: it should
// leave last (end with a barrier), or the other ranks' store calls fail.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "dist/cluster_environment.h"
#include "dist/process_group.h"
#include "dist/tcp_store.h"

namespace loom::dist {

struct ProcessGroupOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = kDefaultMainAddress;
  int master_port = kDefaultMainPort;
  // Bounds the rendezvous and every collective.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  std::string backend = "gloo";  // the only one so far
  // GlooProcessGroup Note [Debug collectives]; unset: LOOM_DEBUG_COLLECTIVES decides.
  std::optional<bool> debug;
  // GlooOptions::shared_memory (same-host all_reduce fast path); unset: LOOM_SHM decides.
  std::optional<bool> shared_memory;
  // Address peers use to reach this rank's Gloo device; empty: 127.0.0.1 when master_addr is
  // a loopback address (single-node jobs), else this host's name as resolved by Gloo.
  std::string hostname;
};

std::shared_ptr<ProcessGroup> init_process_group(const ProcessGroupOptions& options);

// Note [Rank claims]; COLLECTIVE over the store's world_size ranks. Throws RuntimeError naming
// both processes when `rank` is claimed twice, or the ranks never registered by `timeout`.
void register_rank(TCPStore& store, int rank, int world_size, std::chrono::milliseconds timeout);

// The rendezvous store behind a group made by init_process_group (or any GlooProcessGroup);
// nullptr for a group without one.
std::shared_ptr<TCPStore> store_of(const ProcessGroup& group);

}  // namespace loom::dist
