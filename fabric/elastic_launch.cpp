// The supervising process of an elastic "ddp" launch; see elastic_launch.h.
#include "fabric/elastic_launch.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "dist/elastic_restart.h"
#include "dist/process_launcher.h"
#include "dist/socket.h"
#include "fabric/ddp.h"

namespace loom {

void check_max_restarts(int max_restarts, const Strategy& strategy) {
  if (max_restarts < 0)
    throw ValueError(detail::concat("max_restarts=", max_restarts,
                                    " is invalid; it must be >= 0 (0: no restart)"));
  if (max_restarts == 0) return;
  auto* ddp = dynamic_cast<const DDPStrategy*>(&strategy);
  if (!ddp || ddp->options().spawn)
    throw ValueError(detail::concat(
        "max_restarts=", max_restarts, " restarts the ranks of a launch that re-executes the "
        "program (strategy 'ddp', 'fsdp' or 'deepspeed'); strategy '", strategy.name(),
        "' does not start its ranks that way. Use one of those, or run the program under "
        "loomrun --max-restarts"));
}

void supervise_elastic_launch(int max_restarts, const Strategy& strategy,
                              const std::shared_ptr<dist::ClusterEnvironment>& environment) {
  if (max_restarts == 0 || strategy.num_nodes() > 1) return;
  std::shared_ptr<dist::ClusterEnvironment> env = environment;
  if (!env) env = dist::detect_cluster_environment();
  if (env->creates_processes_externally()) return;  // a rank: its launcher restarts it

  int world_size = static_cast<int>(strategy.devices().size());
  std::vector<std::string> argv = dist::this_program_argv();
  std::string master_addr = env->main_address();
  int master_port = env->main_port();
  auto make_group = [&](int attempt) {
    if (attempt > 0) master_port = dist::find_free_port();  // a fresh rendezvous
    std::vector<dist::ProcessSpec> ranks;
    for (int r = 0; r < world_size; ++r) {
      dist::RankLayout layout{.nproc_per_node = world_size, .nnodes = 1, .node_rank = 0,
                              .local_rank = r, .master_addr = master_addr,
                              .master_port = master_port};
      ranks.push_back({r, argv, dist::loomrun_variables(layout)});
    }
    return ranks;
  };
  std::cout.flush();
  std::fflush(nullptr);
  int code = 1;
  try {
    dist::ProcessLauncher launcher({.output = dist::OutputMode::kInherit,
                                    .forward_signals = true,
                                    .name = "Fabric's launcher"});
    dist::RestartResult result = dist::run_with_restarts(
        launcher, make_group,
        {.max_restarts = max_restarts, .who = "loom ddp", .limit_name = "max_restarts"});
    if (!result.ok()) std::cerr << "loom ddp: " << result.message << std::endl;
    code = result.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "loom ddp: " << e.what() << std::endl;
  }
  // The ranks ran the program after launch(); this process has nothing left to do there.
  std::exit(code);
}

}  // namespace loom
