// Fabric's elastic launch: FabricOptions::max_restarts for the strategies that start their
// ranks by re-executing the program (ddp, fsdp, deepspeed; fabric/ddp.h), docs/design.md
// "Elastic restart".
//
// In a plain "ddp" launch the process the user started is rank 0 and the launcher of the
// others at once, so it cannot stop and restart a group it belongs to. With max_restarts > 0
// it is therefore a supervisor only, as loomrun is: launch() re-executes the program once per
// rank, rank 0 included, each with loomrun's variables (so each rank sees a launcher-made
// environment and starts no process itself); when a rank fails it stops them all and starts
// the group again with a fresh MASTER_PORT and LOOM_RESTART_COUNT = 1, 2, ...
// (dist/elastic_restart.h), at most max_restarts times; and when the job is over it ends this
// process with the job's exit code (0, or the failed rank's status, 128 + signal when it was
// killed). The code after launch() thus runs in the ranks only, which resume from their own
// checkpoints (latest_checkpoint()). The supervisor forwards SIGINT/SIGTERM to the ranks.
//
// Under an external launcher (loomrun, SLURM, mpirun) or with num_nodes > 1 the option does
// nothing here: restarting is the launcher's job (loomrun --max-restarts).
#pragma once

#include <memory>

#include "dist/cluster_environment.h"

namespace loom {

class Strategy;

// max_restarts >= 0, and > 0 only with a strategy that re-executes the program; else a
// ValueError naming the fix. The connector calls it.
void check_max_restarts(int max_restarts, const Strategy& strategy);

// Fabric::launch() calls it before the strategy's launch. Returns at once when max_restarts
// is 0, when `environment` (or the detected one when null) was made by a launcher, or with
// num_nodes > 1; otherwise supervises the job as above and never returns.
void supervise_elastic_launch(int max_restarts, const Strategy& strategy,
                              const std::shared_ptr<dist::ClusterEnvironment>& environment);

}  // namespace loom
