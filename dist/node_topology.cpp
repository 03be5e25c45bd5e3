// NodeTopology: node keys and their exchange through the store; see the header.
#include "dist/node_topology.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>

namespace loom::dist {

bool NodeTopology::contiguous() const {
  int next = 0;
  for (const auto& ranks : nodes) {
    for (int r : ranks) {
      if (r != next++) return false;
    }
  }
  return true;
}

std::string NodeTopology::str() const {
  std::ostringstream s;
  s << nodes.size() << (nodes.size() == 1 ? " node:" : " nodes:");
  for (const auto& ranks : nodes) {
    s << " {";
    for (size_t i = 0; i < ranks.size(); ++i) s << (i ? ", " : "") << ranks[i];
    s << "}";
  }
  return s.str();
}

std::string local_node_key() {
  // Without a boot id (an unusual /proc), the host name stands in for the machine.
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string machine;
  if (!in || !std::getline(in, machine) || machine.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    machine = std::string("host ") + host;
  }
  struct stat st {};
  if (stat("/dev/shm", &st) != 0) return machine + "/no-dev-shm";
  return machine + "/" + std::to_string(uint64_t(st.st_dev)) + ":" +
         std::to_string(uint64_t(st.st_ino));
}

NodeTopology exchange_node_keys(int rank, int size, TCPStore& store, const std::string& key_prefix,
                                const std::string& key, std::chrono::milliseconds timeout) {
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) keys.push_back(key_prefix + "/" + std::to_string(r));
  // A leading '=' keeps an empty key a non-empty value.
  store.set(keys[size_t(rank)], "=" + key);
  store.wait(keys, timeout);
  NodeTopology topo;
  std::map<std::string, size_t> node_of_key;
  for (int r = 0; r < size; ++r) {
    const std::string k = r == rank ? key : store.get_string(keys[size_t(r)]).substr(1);
    if (k.empty()) topo.all_keyed = false;
    // An unkeyed rank is a node of its own.
    const std::string group = k.empty() ? "#" + std::to_string(r) : k;
    auto [it, fresh] = node_of_key.emplace(group, topo.nodes.size());
    if (fresh) topo.nodes.emplace_back();
    topo.nodes[it->second].push_back(r);
    if (r == rank) {
      topo.node = int(it->second);
      topo.local_rank = int(topo.nodes[it->second].size()) - 1;
    }
  }
  return topo;
}

}  // namespace loom::dist
