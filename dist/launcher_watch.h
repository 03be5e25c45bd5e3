// A rank says, in one line on stderr, why it stops when the process that started it goes.
//
// A ProcessLauncher (loomrun, or rank 0 of a Fabric "ddp" launch) gives each rank
// PR_SET_PDEATHSIG = SIGKILL, so no rank outlives it; but a SIGKILL leaves no word, and the
// ranks that survive a kill -9 of rank 0 or of loomrun just vanished. A loom rank therefore
// calls watch_launcher() once it runs, and ddp_spawn's forked ranks watch_parent(); from then
// on, exactly one of the first two lines is written to stderr before the rank ends:
//
//   loom: rank 1: rank 0 (train_mlp, pid 4242), which started this rank, died; stopping
//       its parent died: the parent-death signal is now kParentDeathSignal, whose handler
//       writes the line and _exit(1)s. A collective that fails because that parent is going
//       (its sockets close a moment before the kernel signals its death) reports the same
//       line through stop_if_launcher_died() instead of throwing.
//   loom: rank 1: stopped by SIGTERM from the launcher (loomrun, pid 4242)[ after its
//       collective failed: <error>]
//       the launcher (or anyone) sent SIGTERM, e.g. loomrun stopping the job because another
//       rank failed; the handler writes the line and re-raises SIGTERM with its default
//       action, so the launcher still sees a rank it stopped.
//
//   loom: rank 1: rank 0 (train_mlp, pid 4242), which started this rank, is stopped (SIGSTOP,
//       Ctrl-Z) and this rank's collective failed; sending it SIGCONT so that the job can end
//       a stopped launcher runs no code: without the SIGCONT the job would stay stopped for
//       ever after the other ranks timed out (Note [Stopped launcher] in launcher_watch.cpp).
//       This line does not end the rank: its collective's error does.
//
// The line goes to the rank's stderr or, when that was a pipe to the launcher that just died
// (loomrun prefixes its ranks' lines), to the launcher's own stderr, opened at watch time.
// The handlers are only installed over the default action: a program's own SIGTERM handler,
// or one installed later, takes precedence. The launcher passes its pid and what to call it in
// LOOM_LAUNCHER_PID and LOOM_LAUNCHER_NAME; a rank whose parent is not that pid (the variables
// were inherited from further up) watches nothing.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

namespace loom::dist {

// Set by ProcessLauncher::spawn in every rank's environment.
inline constexpr char kLauncherPidVariable[] = "LOOM_LAUNCHER_PID";
inline constexpr char kLauncherNameVariable[] = "LOOM_LAUNCHER_NAME";

// The signal a watched rank receives when its parent dies (a real-time signal, which nothing
// else in loom uses).
int parent_death_signal();

// In a rank started by a ProcessLauncher: watch_parent(rank, LOOM_LAUNCHER_PID,
// LOOM_LAUNCHER_NAME) when those variables name this process's parent; else nothing.
void watch_launcher(int rank);

// Watches `parent` (this process's parent, described as `who`, e.g. "rank 0"); when it is
// already gone, writes the line and exits at once. Once per process (a child forked after it,
// with no other thread yet, may watch its own parent).
void watch_parent(int rank, pid_t parent, const std::string& who);

// Whether this process watches its parent.
bool watching_parent();

// Called when a collective of this process failed with `error`: when the watched parent is
// dying, writes its line and exits instead of returning; when the launcher's SIGTERM arrives
// meanwhile, that line carries `error`. Waits at most `wait` for either, then returns (the
// caller throws its error). Returns at once when nothing is watched.
void stop_if_launcher_died(const std::string& error,
                           std::chrono::milliseconds wait = std::chrono::milliseconds(300));

}  // namespace loom::dist
