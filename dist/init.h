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
  // Address peers use to reach this rank's Gloo device; empty: advertised_address().
  std::string hostname;
};

std::shared_ptr<ProcessGroup> init_process_group(const ProcessGroupOptions& options);

// Run-time switches: the address of this rank that the others connect to (Gloo's device).
inline constexpr char kSocketAddrVariable[] = "LOOM_SOCKET_ADDR";
inline constexpr char kSocketIfnameVariable[] = "LOOM_SOCKET_IFNAME";

// The address this rank advertises to its peers, first that applies:
//   LOOM_SOCKET_ADDR=<IPv4 address>    that address (ValueError if it is not one);
//   LOOM_SOCKET_IFNAME=<interface>     that interface's IPv4 address (ValueError if none);
//   a loopback master_addr             127.0.0.1 (a single-node job);
//   otherwise                          the local address that routes to master_addr (a UDP
//                                      socket connected there, read with getsockname).
// The last replaces this host's name as resolved by Gloo, which on many systems is
// 127.0.0.1 or 127.0.1.1 (/etc/hosts), so that every rank of a multi-node job advertised a
// loopback address its peers on other nodes cannot reach. loomrun --socket-ifname and
// --socket-addr set the variables for the ranks it starts.
std::string advertised_address(const std::string& master_addr);

// Note [Rank claims]; COLLECTIVE over the store's world_size ranks. Throws RuntimeError naming
// both processes when `rank` is claimed twice, or the ranks never registered by `timeout`.
void register_rank(TCPStore& store, int rank, int world_size, std::chrono::milliseconds timeout);

// The rendezvous store behind a group made by init_process_group (or any GlooProcessGroup);
// nullptr for a group without one.
std::shared_ptr<TCPStore> store_of(const ProcessGroup& group);

}  // namespace loom::dist
