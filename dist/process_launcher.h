// ProcessLauncher: starts the processes of a job on this machine and supervises them. loomrun
// is a thin command line over it; Fabric's "ddp" strategy reuses it to re-execute the program
// once per extra local rank.
//
// What it does: fork/exec each rank with extra environment variables; optionally prefix every
// line of each rank's stdout/stderr with "[rank R] " (pipes drained by a poll() loop, one
// write() per line so ranks never interleave mid-line); supervise: when a rank exits non-zero
// or dies by a signal, stop the others (SIGTERM, then SIGKILL after a grace period) and report
// which rank failed and how; optionally forward SIGINT/SIGTERM received by this process.
//
// Note [Process groups]: each rank runs in its own process group, and "stop" signals the
// group, so helpers a rank started (a shell's children, data workers) stop with it. The price:
// ranks are not in the terminal's foreground group, so Ctrl-C reaches them only through
// forwarding (LauncherOptions::forward_signals) and their stdin is /dev/null (reading the
// terminal from a background group would stop them). Exits are observed without reaping
// (waitid WNOWAIT) until the end of wait(), so a rank's pid, and therefore its group id,
// cannot be reused by an unrelated process while we may still signal it.
//
// Each child also gets PR_SET_PDEATHSIG = SIGKILL: if the launcher itself is killed, no rank
// outlives it. Linux ties this to the thread that forked, so spawn from a long-lived thread.
// Its environment names the launcher (LOOM_LAUNCHER_PID, LOOM_LAUNCHER_NAME), so that a loom
// rank can turn that silent kill into one line saying why it stops (launcher_watch.h).
//
// Not here: choosing ranks or ports (cluster_environment.h builds the variables), remote
// nodes (run one launcher per node), restarts (elastic_restart.h runs attempts on a launcher:
// wait() leaves it empty and ready for the next spawn).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "dist/cluster_environment.h"
#include "dist/unique_fd.h"

namespace loom::dist {

struct ProcessSpec {
  int rank = 0;                   // label for output prefixes and reports
  std::vector<std::string> argv;  // argv[0]: a path, or a name looked up in PATH
  EnvMap env_overrides;           // set on top of this process's environment
};

enum class OutputMode {
  kInherit,      // ranks write straight to this process's stdout/stderr
  kPrefixLines,  // "[rank R] " before every line; needs wait() (or poll()) to drain the pipes
};

struct LauncherOptions {
  OutputMode output = OutputMode::kPrefixLines;
  int stdout_fd = STDOUT_FILENO;  // destination of prefixed stdout lines
  int stderr_fd = STDERR_FILENO;  // destination of prefixed stderr lines
  // Time between SIGTERM and SIGKILL when stopping ranks: lets them flush logs or
  // checkpoints, but a wedged rank cannot hold the job hostage.
  std::chrono::milliseconds grace_period = std::chrono::seconds(5);
  // During wait(), forward SIGINT/SIGTERM received by this process to every rank (and stop
  // them after the grace period). Off by default: a library should not take over a program's
  // signal handlers unless asked; loomrun turns it on.
  bool forward_signals = false;
  // What the ranks call this launcher in the line they write if it dies (launcher_watch.h):
  // "the launcher (loomrun, pid 42) ... died"; Fabric's "ddp" launch names itself "rank 0".
  std::string name = "the launcher";
};

struct RankExit {
  int rank = 0;
  pid_t pid = 0;
  bool signaled = false;             // died by a signal (code is the signal number)
  int code = 0;                      // exit status, or signal number when signaled
  bool stopped_by_launcher = false;  // exited after the launcher began stopping the job

  bool ok() const { return !signaled && code == 0; }
  // "exited with status 3" / "was killed by signal 9 (SIGKILL)".
  std::string describe() const;
};

struct LaunchResult {
  std::vector<RankExit> exits;            // one per spawned rank, in spawn order
  std::optional<RankExit> first_failure;  // the rank whose failure stopped the job
  int received_signal = 0;                // a forwarded SIGINT/SIGTERM, 0 if none
  bool timed_out = false;                 // wait()'s timeout stopped the job
  std::string message;                    // empty on success, else what happened and what we did

  bool ok() const { return message.empty(); }
  // Process exit code for a launcher: 0 on success; the failed rank's status (128 + signal when
  // it was killed); 128 + the forwarded signal; 124 on timeout (like timeout(1)).
  int exit_code() const;
};

// This program's command line (from /proc/self/cmdline), with argv[0] replaced by the path of
// its executable, so that it can be started again as another rank. Throws RuntimeError when
// it cannot be read.
std::vector<std::string> this_program_argv();

class ProcessLauncher {
 public:
  explicit ProcessLauncher(LauncherOptions options = {});
  // Stops (SIGTERM, grace period, SIGKILL) and reaps ranks still running. Never throws.
  ~ProcessLauncher();
  ProcessLauncher(const ProcessLauncher&) = delete;
  ProcessLauncher& operator=(const ProcessLauncher&) = delete;

  // Starts one rank. Throws loom::RuntimeError when the program cannot be found or executed
  // (the exec error is reported back from the child, not guessed).
  void spawn(const ProcessSpec& spec);

  // Supervises until every rank has exited, one failed (the others are then stopped), a
  // forwarded signal stopped them, or `timeout` passed (then they are stopped too). Always
  // returns with every rank reaped.
  LaunchResult wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt);

  // Non-blocking check for callers that keep working meanwhile (Fabric's rank 0): drains
  // output, notes exits, and returns the first failed rank seen, if any. Stops nothing.
  std::optional<RankExit> poll();

  // SIGTERM to every running rank, SIGKILL after the grace period, then reap. Output still
  // buffered is flushed.
  void stop_all();

  std::size_t num_running() const;

 private:
  struct Child {
    int rank = 0;
    pid_t pid = 0;
    UniqueFd out;  // read ends of the rank's stdout/stderr pipes (kPrefixLines only)
    UniqueFd err;
    std::string out_partial;  // bytes after the last newline
    std::string err_partial;
    std::optional<RankExit> exit;  // set once the exit was observed
    bool reaped = false;
  };

  // Notes exits of running children without reaping them; while not stopping, the first
  // failure becomes first_failure_ (a rank killed by a signal over one that exited with a
  // status when both are seen at once: Note [Naming the cause] in process_launcher.cpp).
  void observe_exits(bool stopping);
  // Reads what is available from every open pipe, waiting up to `wait_ms` (plus `extra_fd`,
  // e.g. the signal pipe, which is not read here). Returns extra_fd's revents.
  short pump_output(int wait_ms, int extra_fd);
  void emit(Child& child, bool is_err, const char* data, std::size_t n);
  void flush_partial(Child& child);
  void signal_running(int sig);
  void kill_groups_and_reap();
  bool all_exited() const;

  LauncherOptions options_;
  std::vector<Child> children_;
  std::optional<RankExit> first_failure_;
};

}  // namespace loom::dist
