// init_process_group: store rendezvous then the backend's group; see init.h.
#include "dist/init.h"

#include "dist/gloo_process_group.h"
#include "tensor/error.h"

namespace loom::dist {

namespace {

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

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
  GlooOptions gloo;
  gloo.timeout = options.timeout;
  gloo.debug = options.debug;
  gloo.shared_memory = options.shared_memory;
  gloo.hostname = !options.hostname.empty()           ? options.hostname
                  : is_loopback(options.master_addr) ? std::string("127.0.0.1")
                                                     : std::string();
  return std::make_shared<GlooProcessGroup>(options.rank, options.world_size, std::move(store),
                                            gloo);
}

std::shared_ptr<TCPStore> store_of(const ProcessGroup& group) {
  if (auto* gloo = dynamic_cast<const GlooProcessGroup*>(&group)) return gloo->store();
  return nullptr;
}

}  // namespace loom::dist
