// NodeTopology: which ranks of a group share one host's shared memory ("a node"), for the
// hierarchical collectives of GlooProcessGroup (Note [Hierarchical all_reduce] there).
//
// Node identity is what shared memory needs, not a name: the kernel's boot id
// (/proc/sys/kernel/random/boot_id) with the device and inode of /dev/shm. Two machines never
// share a boot id; two containers or network namespaces of one machine with separate /dev/shm
// mounts differ in the device; processes that can open one another's segments agree. Every
// rank publishes its key in the store, and all ranks group the same keys the same way: nodes
// are ordered by their lowest rank, the ranks of a node ascending, the node's leader is its
// lowest rank (local rank 0). The segments themselves are still verified when mapped
// (ShmAllReduce::try_create), so a key that wrongly matches only costs the fast path.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "dist/tcp_store.h"

namespace loom::dist {

struct NodeTopology {
  std::vector<std::vector<int>> nodes;  // each node's ranks, ascending; nodes by lowest rank
  int node = 0;                         // this rank's node
  int local_rank = 0;                   // this rank's index in nodes[node]
  // False when some rank published an empty key (it opted out of shared memory); such a rank
  // counts as a node of its own.
  bool all_keyed = true;

  int local_size() const { return int(nodes[size_t(node)].size()); }
  int leader(int n) const { return nodes[size_t(n)][0]; }
  bool is_leader() const { return local_rank == 0; }
  // Each node's ranks consecutive and the nodes in rank order (loomrun's layout): then the
  // hierarchical fold is exactly the rank-order fold of one host.
  bool contiguous() const;
  // "2 nodes: {0, 1} {2, 3}", for messages and tests.
  std::string str() const;
};

// This process's node key: boot id (the host name if it cannot be read), /dev/shm device and
// inode. Never empty.
std::string local_node_key();

// COLLECTIVE over `size` ranks through `store` (keys under key_prefix): publishes `key`
// (empty: opted out of shared memory) and groups every rank's. RuntimeError when a rank does
// not publish within `timeout`.
NodeTopology exchange_node_keys(int rank, int size, TCPStore& store, const std::string& key_prefix,
                                const std::string& key, std::chrono::milliseconds timeout);

}  // namespace loom::dist
