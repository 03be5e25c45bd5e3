// Elastic restart: runs the local ranks of a job and, when one of them fails, stops them all
// and starts the whole group again with the same world size, up to max_restarts times (what
// torchrun's --max-restarts does). loomrun --max-restarts and Fabric's "ddp" launch with
// FabricOptions::max_restarts use it; docs/design.md "Elastic restart" says what a restarted
// job gets back (what it saved in its checkpoints) and what it loses (the in-flight steps).
//
// An attempt ends when every rank exited (success), or when a rank exited non-zero or died by
// a signal: ProcessLauncher::wait() then stops the others (SIGTERM, grace period, SIGKILL, the
// ranks' process groups included) and reaps them, so no process of that attempt is left when
// the next one starts. The next attempt gets its ranks from the caller's GroupFactory again,
// which picks a fresh rendezvous (loomrun and Fabric take a new free MASTER_PORT, so a stray
// peer of an old attempt could not join even if one survived), and every rank of attempt k
// sees LOOM_RESTART_COUNT=k (0 on the first run, like TORCHELASTIC_RESTART_COUNT). One line
// per restart says which rank failed and how.
//
// Not restarted: a job that a forwarded SIGINT/SIGTERM stopped (the user asked it to stop),
// one that wait()'s timeout stopped, and a program that cannot be started (spawn's error is
// thrown). Multi-node jobs are refused by loomrun: each node's launcher would restart on its
// own, with no rendezvous between the launchers to agree on the attempt.
#pragma once

#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "dist/process_launcher.h"

namespace loom::dist {

// The attempt number every rank of an attempt gets: 0 on the first run, k after k restarts.
inline constexpr char kRestartCountVariable[] = "LOOM_RESTART_COUNT";

struct RestartOptions {
  int max_restarts = 0;                        // restarts after the first run; 0: none
  std::string who = "loomrun";                 // prefix of the restart lines
  std::string limit_name = "--max-restarts";   // how the user set the limit, for the messages
  int log_fd = STDERR_FILENO;                  // where the restart lines go
};

// The ranks of attempt `attempt` (0, 1, ...). Called once per attempt, so that each attempt
// can have a fresh rendezvous; the launcher adds LOOM_RESTART_COUNT to every rank's variables.
using GroupFactory = std::function<std::vector<ProcessSpec>(int attempt)>;

struct RestartResult {
  LaunchResult last;               // the last attempt's result
  int restarts = 0;                // restarts done (attempts - 1)
  std::vector<RankExit> failures;  // the failure that ended each failed attempt, in order
  std::string message;             // empty on success, else what ended the job

  bool ok() const { return message.empty(); }
  int exit_code() const { return last.exit_code(); }
};

// Runs attempts of make_group's ranks on `launcher` until one succeeds, one ends for a reason
// other than a rank's failure, or max_restarts restarts were used. Throws ValueError for a
// negative max_restarts or a factory that returns no rank.
RestartResult run_with_restarts(ProcessLauncher& launcher, const GroupFactory& make_group,
                                const RestartOptions& options);

}  // namespace loom::dist
