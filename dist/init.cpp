// init_process_group: store rendezvous then the backend's group; see init.h.
#include "dist/init.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "dist/gloo_process_group.h"
#include "dist/socket.h"
#include "core/error.h"

namespace loom::dist {

namespace {

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

std::string this_process() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return detail::concat("pid ", getpid(), " on host '", host, "'");
}

// Throws `msg` once this process has counted itself as having seen the conflict. The process
// hosting the store first waits (up to 2 s) until every process did, so none of them meets
// a closed store instead of the conflict.
[[noreturn]] void fail_on_conflict(TCPStore& store, int world_size, const std::string& msg) {
  const std::string seen_key = "init/rank/conflict_seen";
  store.add(seen_key, 1);
  if (store.is_server()) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (store.add(seen_key, 0) < world_size && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  throw RuntimeError(msg);
}

}  // namespace

std::string advertised_address(const std::string& master_addr) {
  const char* addr = std::getenv(kSocketAddrVariable);
  if (addr != nullptr && *addr != '\0') {
    in_addr parsed{};
    LOOM_VALUE_CHECK(::inet_pton(AF_INET, addr, &parsed) == 1, kSocketAddrVariable, "='", addr,
                     "' is not an IPv4 address (e.g. 10.0.0.2)");
    return addr;
  }
  const char* ifname = std::getenv(kSocketIfnameVariable);
  if (ifname != nullptr && *ifname != '\0') {
    try {
      return interface_address(ifname);
    } catch (const ValueError& e) {
      throw ValueError(detail::concat(kSocketIfnameVariable, ": ", e.what()));
    }
  }
  if (is_loopback(master_addr)) return "127.0.0.1";
  try {
    return local_address_toward(master_addr);
  } catch (const RuntimeError& e) {
    throw RuntimeError(detail::concat(
        "init_process_group: cannot choose the address to advertise to the other ranks (",
        e.what(), "); set ", kSocketAddrVariable, "=<this host's IP> or ", kSocketIfnameVariable,
        "=<interface>"));
  }
}

void register_rank(TCPStore& store, int rank, int world_size, std::chrono::milliseconds timeout) {
  const std::string base = "init/rank/";
  const std::string conflict_key = base + "conflict";
  const std::string me = this_process();
  const std::string claims = base + std::to_string(rank) + "/claims";
  const int64_t n = store.add(claims, 1);
  store.set(base + std::to_string(rank) + "/claim/" + std::to_string(n), me);
  if (n > 1) {
    const std::string first = store.get_string(base + std::to_string(rank) + "/claim/1");
    const std::string msg = detail::concat(
        "init_process_group: RANK ", rank, " was claimed by two processes: ", first,
        " (first) and ", me, " (claimant number ", n,
        "); every process of the job needs its own RANK in 0..", world_size - 1,
        " (check RANK / the launcher's --node-rank and --nproc-per-node)");
    store.set(conflict_key, msg);
    fail_on_conflict(store, world_size, msg);
  }
  std::vector<std::string> firsts;
  for (int r = 0; r < world_size; ++r) firsts.push_back(base + std::to_string(r) + "/claim/1");
  // Poll rather than block: a duplicate's conflict must end every rank at once, not after the
  // timeout (Note in init.h).
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    if (store.check({conflict_key}))
      fail_on_conflict(store, world_size, store.get_string(conflict_key));
    if (store.check(firsts)) return;
    if (std::chrono::steady_clock::now() - start > timeout) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::string missing;
  for (int r = 0; r < world_size; ++r) {
    if (!store.check({firsts[size_t(r)]})) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
  }
  throw RuntimeError(detail::concat(
      "init_process_group: rank ", rank, " (", me, "): RANK ", missing,
      " never registered within ", timeout.count(), " ms although ", world_size,
      " processes joined the store; a process may have been given another rank's RANK"));
}

std::shared_ptr<ProcessGroup> init_process_group(const ProcessGroupOptions& options) {
  LOOM_VALUE_CHECK(options.backend == "gloo", "init_process_group: unknown backend '",
                   options.backend, "'; available: gloo");
  LOOM_VALUE_CHECK(options.world_size >= 1, "init_process_group: world_size must be >= 1, got ",
                   options.world_size);
  LOOM_VALUE_CHECK(options.rank >= 0 && options.rank < options.world_size,
                   "init_process_group: rank ", options.rank, " is outside [0, ",
                   options.world_size, "); check RANK and WORLD_SIZE");
  LOOM_VALUE_CHECK(options.master_port >= 0 && options.master_port <= 65535,
                   "init_process_group: master_port ", options.master_port,
                   " is outside 0..65535");
  LOOM_VALUE_CHECK(options.master_port > 0 || options.rank == 0,
                   "init_process_group: rank ", options.rank,
                   " needs rank 0's store port, got master_port 0 (pick-a-free-port is only "
                   "meaningful on rank 0)");
  LOOM_VALUE_CHECK(options.timeout.count() > 0, "init_process_group: timeout must be positive");
  // The store's errors (port taken, ranks missing, wrong world size) already say what to check.
  auto store = std::make_shared<TCPStore>(options.master_addr, options.master_port,
                                          options.world_size, options.rank == 0, options.timeout,
                                          /*wait_for_workers=*/true);
  register_rank(*store, options.rank, options.world_size, options.timeout);
  GlooOptions gloo;
  gloo.timeout = options.timeout;
  gloo.debug = options.debug;
  gloo.shared_memory = options.shared_memory;
  gloo.hostname =
      !options.hostname.empty() ? options.hostname : advertised_address(options.master_addr);
  return std::make_shared<GlooProcessGroup>(options.rank, options.world_size, std::move(store),
                                            gloo);
}

std::shared_ptr<TCPStore> store_of(const ProcessGroup& group) {
  if (auto* gloo = dynamic_cast<const GlooProcessGroup*>(&group)) return gloo->store();
  return nullptr;
}

}  // namespace loom::dist
