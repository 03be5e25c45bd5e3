// Process spawning and supervision; see process_launcher.h, in particular
// Note [Process groups].
#include "dist/process_launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

#include "dist/launcher_watch.h"
#include "dist/socket.h"
#include "core/error.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;

// A line longer than this is emitted in pieces rather than buffered without bound.
constexpr std::size_t kMaxLineBytes = 64 * 1024;
// Supervision tick: how often exits are checked while no output or signal arrives.
constexpr int kTickMs = 20;
// After every rank exited, how long leftover writers (grandchildren) may keep pipes open.
constexpr auto kDrainAfterExit = 500ms;

std::string signal_name(int sig) {
  switch (sig) {
    case SIGHUP:
      return "SIGHUP";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGILL:
      return "SIGILL";
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGKILL:
      return "SIGKILL";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGPIPE:
      return "SIGPIPE";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "signal " + std::to_string(sig);
  }
}

// Finds `name` the way execvp would, but before fork(): execvp may allocate, which is not
// allowed between fork and exec in a multi-threaded parent.
std::string resolve_program(const std::string& name, const EnvMap& env, int rank) {
  LOOM_VALUE_CHECK(!name.empty(), "ProcessLauncher: rank ", rank, " has an empty program name");
  if (name.find('/') != std::string::npos) return name;
  auto it = env.find("PATH");
  std::string path = it != env.end() ? it->second : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  for (;;) {
    std::size_t end = path.find(':', start);
    std::string dir = path.substr(start, end == std::string::npos ? end : end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    struct stat info {};
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  throw RuntimeError(detail::concat("ProcessLauncher: cannot start rank ", rank, ": program '",
                                    name, "' was not found in PATH; give its path instead"));
}

// ---- signal forwarding ---------------------------------------------------------------------

// Write end of the self-pipe of the active SignalForwarding (-1 when none). A plain int
// because the handler may only touch lock-free state.
volatile sig_atomic_t g_signal_pipe = -1;

void on_forwarded_signal(int sig) {
  int saved = errno;
  char byte = static_cast<char>(sig);
  if (g_signal_pipe >= 0) [[maybe_unused]]
    ssize_t rc = ::write(g_signal_pipe, &byte, 1);
  errno = saved;
}

// Installs SIGINT/SIGTERM handlers that write the signal number to a pipe, for the lifetime
// of the object; restores the previous handlers after.
class SignalForwarding {
 public:
  SignalForwarding() {
    LOOM_CHECK(g_signal_pipe < 0, "only one ProcessLauncher may forward signals at a time");
    int fds[2];
    LOOM_CHECK(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2: ", std::strerror(errno));
    read_.reset(fds[0]);
    write_.reset(fds[1]);
    g_signal_pipe = write_.get();
    struct sigaction action {};
    action.sa_handler = on_forwarded_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~SignalForwarding() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
    g_signal_pipe = -1;
  }
  SignalForwarding(const SignalForwarding&) = delete;
  SignalForwarding& operator=(const SignalForwarding&) = delete;

  int fd() const { return read_.get(); }
  // The signals received since the last call, in order.
  std::vector<int> take() {
    std::vector<int> signals;
    char buf[64];
    ssize_t n;
    while ((n = ::read(read_.get(), buf, sizeof(buf))) > 0) {
      for (ssize_t i = 0; i < n; ++i) signals.push_back(static_cast<unsigned char>(buf[i]));
    }
    return signals;
  }

 private:
  UniqueFd read_, write_;
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

}  // namespace

std::vector<std::string> this_program_argv() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> argv;
  for (std::string arg; std::getline(in, arg, '\0');) argv.push_back(arg);
  if (argv.empty())
    throw RuntimeError("cannot read this program's command line (/proc/self/cmdline) to start it "
                       "again as another rank; is /proc mounted?");
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) argv[0] = std::string(exe, static_cast<std::size_t>(n));
  return argv;
}

std::string RankExit::describe() const {
  if (signaled) return detail::concat("was killed by signal ", code, " (", signal_name(code), ")");
  return detail::concat("exited with status ", code);
}

int LaunchResult::exit_code() const {
  if (first_failure)
    return first_failure->signaled ? 128 + first_failure->code : first_failure->code;
  if (received_signal != 0) return 128 + received_signal;
  if (timed_out) return 124;
  return 0;
}

ProcessLauncher::ProcessLauncher(LauncherOptions options) : options_(options) {
  LOOM_VALUE_CHECK(options_.grace_period.count() >= 0,
                   "ProcessLauncher: grace_period must not be negative");
}

ProcessLauncher::~ProcessLauncher() {
  try {
    stop_all();
  } catch (...) {
    // Destructors must not throw; stop_all only fails on write errors to the output fds.
  }
}

void ProcessLauncher::spawn(const ProcessSpec& spec) {
  LOOM_VALUE_CHECK(!spec.argv.empty(), "ProcessLauncher: rank ", spec.rank,
                   " has no program to run; pass at least argv[0]");
  // Everything the child needs is built before fork(): after it, only async-signal-safe calls.
  EnvMap env = process_environment();
  for (auto& [key, value] : spec.env_overrides) env[key] = value;
  env[kLauncherPidVariable] = std::to_string(::getpid());
  env[kLauncherNameVariable] = options_.name;
  std::string program = resolve_program(spec.argv[0], env, spec.rank);
  std::vector<std::string> env_strings;
  for (auto& [key, value] : env) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);

  auto make_pipe = [](UniqueFd& read_end, UniqueFd& write_end) {
    int fds[2];
    LOOM_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "pipe2: ", std::strerror(errno));
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
  };
  bool prefix = options_.output == OutputMode::kPrefixLines;
  UniqueFd out_read, out_write, err_read, err_write, exec_read, exec_write;
  if (prefix) {
    make_pipe(out_read, out_write);
    make_pipe(err_read, err_write);
  }
  // The child reports a failed exec through this pipe; a successful exec closes it (CLOEXEC),
  // so the parent reads either an errno or end-of-file.
  make_pipe(exec_read, exec_write);
  UniqueFd dev_null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  LOOM_CHECK(dev_null.valid(), "open /dev/null: ", std::strerror(errno));
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    throw RuntimeError(detail::concat("ProcessLauncher: fork() for rank ", spec.rank,
                                      " failed: ", std::strerror(errno),
                                      "; the machine may be out of processes or memory"));
  }
  if (pid == 0) {
    ::setpgid(0, 0);  // Note [Process groups]
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the launcher died before prctl took effect
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Ignored signals stay ignored across exec; ranks must get the default behaviour.
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(dev_null.get(), STDIN_FILENO);
    if (prefix) {
      ::dup2(out_write.get(), STDOUT_FILENO);
      ::dup2(err_write.get(), STDERR_FILENO);
    }
    ::execve(program.c_str(), argv.data(), envp.data());
    int err = errno;
    [[maybe_unused]] ssize_t rc = ::write(exec_write.get(), &err, sizeof(err));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent, so no signal can race the child's own call
  out_write.reset();
  err_write.reset();
  exec_write.reset();
  int exec_errno = 0;
  ssize_t got;
  do {
    got = ::read(exec_read.get(), &exec_errno, sizeof(exec_errno));
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof(exec_errno))) {
    ::waitpid(pid, nullptr, 0);
    throw RuntimeError(detail::concat("ProcessLauncher: cannot start rank ", spec.rank,
                                      ": executing '", program,
                                      "' failed: ", std::strerror(exec_errno)));
  }
  Child child;
  child.rank = spec.rank;
  child.pid = pid;
  if (prefix) {
    ::fcntl(out_read.get(), F_SETFL, O_NONBLOCK);
    ::fcntl(err_read.get(), F_SETFL, O_NONBLOCK);
    child.out = std::move(out_read);
    child.err = std::move(err_read);
  }
  children_.push_back(std::move(child));
}

void ProcessLauncher::observe_exits(bool stopping) {
  // Note [Naming the cause]: when a rank is killed, its peers' collectives fail a few
  // milliseconds later and they exit with a status; when this check sees both at once, the
  // rank killed by a signal is the cause to name, whatever its place in spawn order.
  std::optional<RankExit> exited, killed;
  for (auto& child : children_) {
    if (child.exit) continue;
    siginfo_t info{};
    // WNOWAIT: see Note [Process groups]; the zombie keeps the pid and group id reserved.
    if (::waitid(P_PID, static_cast<id_t>(child.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid == 0) {
      continue;
    }
    RankExit exit;
    exit.rank = child.rank;
    exit.pid = child.pid;
    exit.signaled = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
    exit.code = info.si_status;
    exit.stopped_by_launcher = stopping;
    child.exit = exit;
    if (exit.ok() || stopping) continue;
    std::optional<RankExit>& first = exit.signaled ? killed : exited;
    if (!first) first = exit;
  }
  if (!first_failure_) first_failure_ = killed ? killed : exited;
}

bool ProcessLauncher::all_exited() const {
  for (auto& child : children_) {
    if (!child.exit) return false;
  }
  return true;
}

std::size_t ProcessLauncher::num_running() const {
  std::size_t running = 0;
  for (auto& child : children_) running += child.exit ? 0 : 1;
  return running;
}

void ProcessLauncher::emit(Child& child, bool is_err, const char* data, std::size_t n) {
  std::string& partial = is_err ? child.err_partial : child.out_partial;
  int fd = is_err ? options_.stderr_fd : options_.stdout_fd;
  partial.append(data, n);
  std::string prefix = detail::concat("[rank ", child.rank, "] ");
  std::size_t start = 0;
  for (;;) {
    std::size_t newline = partial.find('\n', start);
    if (newline == std::string::npos && partial.size() - start < kMaxLineBytes) break;
    std::size_t end = newline == std::string::npos ? start + kMaxLineBytes : newline;
    // One write per line keeps lines of different ranks whole in the shared output.
    std::string line = prefix + partial.substr(start, end - start) + "\n";
    write_all(fd, line.data(), line.size());
    start = newline == std::string::npos ? end : end + 1;
  }
  partial.erase(0, start);
}

void ProcessLauncher::flush_partial(Child& child) {
  for (bool is_err : {false, true}) {
    std::string& partial = is_err ? child.err_partial : child.out_partial;
    if (partial.empty()) continue;
    std::string line = detail::concat("[rank ", child.rank, "] ", partial, "\n");
    write_all(is_err ? options_.stderr_fd : options_.stdout_fd, line.data(), line.size());
    partial.clear();
  }
}

short ProcessLauncher::pump_output(int wait_ms, int extra_fd) {
  std::vector<pollfd> fds;
  std::vector<std::pair<Child*, bool>> owners;  // (child, is_err) per pipe in fds
  for (auto& child : children_) {
    if (child.out.valid()) {
      fds.push_back({child.out.get(), POLLIN, 0});
      owners.emplace_back(&child, false);
    }
    if (child.err.valid()) {
      fds.push_back({child.err.get(), POLLIN, 0});
      owners.emplace_back(&child, true);
    }
  }
  if (extra_fd >= 0) fds.push_back({extra_fd, POLLIN, 0});
  if (fds.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    return 0;
  }
  if (::poll(fds.data(), fds.size(), wait_ms) <= 0) return 0;  // timeout or EINTR
  char buf[16 * 1024];
  for (std::size_t i = 0; i < owners.size(); ++i) {
    if (fds[i].revents == 0) continue;
    auto [child, is_err] = owners[i];
    UniqueFd& pipe = is_err ? child->err : child->out;
    ssize_t n = ::read(pipe.get(), buf, sizeof(buf));
    if (n > 0) {
      emit(*child, is_err, buf, static_cast<std::size_t>(n));
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      pipe.reset();  // end of file: every writer (the rank and its helpers) is gone
      if (!child->out.valid() && !child->err.valid()) flush_partial(*child);
    }
  }
  return extra_fd >= 0 ? fds.back().revents : 0;
}

void ProcessLauncher::signal_running(int sig) {
  for (auto& child : children_) {
    if (!child.exit) ::kill(-child.pid, sig);
  }
}

void ProcessLauncher::kill_groups_and_reap() {
  for (auto& child : children_) {
    if (child.reaped) continue;
    // The leader is a zombie or dead-to-be, so this reaches only leftover helpers in its group.
    ::kill(-child.pid, SIGKILL);
  }
  for (auto& child : children_) {
    if (child.reaped) continue;
    int status = 0;
    while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
    child.reaped = true;
    if (!child.exit) {
      RankExit exit{child.rank, child.pid, WIFSIGNALED(status) != 0,
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), true};
      child.exit = exit;
    }
  }
}

LaunchResult ProcessLauncher::wait(std::optional<std::chrono::milliseconds> timeout) {
  LaunchResult result;
  std::optional<SignalForwarding> forwarding;
  if (options_.forward_signals) forwarding.emplace();
  std::optional<Deadline> deadline;
  if (timeout) deadline = deadline_after(*timeout);
  bool stopping = false;
  // When SIGKILL follows the SIGTERM of a stop; max() while none is due.
  Deadline kill_at = Deadline::max();
  auto begin_stop = [&](int sig) {
    signal_running(sig);
    if (!stopping) kill_at = deadline_after(options_.grace_period);
    stopping = true;
  };

  observe_exits(false);
  while (!all_exited()) {
    if (first_failure_ && !stopping) begin_stop(SIGTERM);
    if (deadline && !stopping && Clock::now() >= *deadline) {
      result.timed_out = true;
      begin_stop(SIGTERM);
    }
    if (Clock::now() >= kill_at) {
      signal_running(SIGKILL);
      kill_at = Deadline::max();
    }
    short signal_events = pump_output(kTickMs, forwarding ? forwarding->fd() : -1);
    if (forwarding && signal_events != 0) {
      for (int sig : forwarding->take()) {
        if (result.received_signal == 0) result.received_signal = sig;
        begin_stop(sig);  // forward as is: a rank may treat SIGINT and SIGTERM differently
      }
    }
    observe_exits(stopping);
  }
  // Every rank exited; give pipes still held by helpers a moment, then stop waiting on them.
  Deadline drain_until = Clock::now() + kDrainAfterExit;
  auto pipes_open = [&] {
    for (auto& child : children_) {
      if (child.out.valid() || child.err.valid()) return true;
    }
    return false;
  };
  while (pipes_open() && Clock::now() < drain_until) pump_output(kTickMs, -1);
  for (auto& child : children_) {
    child.out.reset();
    child.err.reset();
    flush_partial(child);
  }
  if (stopping) {
    kill_groups_and_reap();
  } else {
    for (auto& child : children_) {
      if (!child.reaped) ::waitpid(child.pid, nullptr, 0);
      child.reaped = true;
    }
  }

  for (auto& child : children_) result.exits.push_back(*child.exit);
  result.first_failure = first_failure_;
  bool others = children_.size() > 1;
  if (first_failure_) {
    result.message = detail::concat("rank ", first_failure_->rank, " ", first_failure_->describe(),
                                    others ? "; stopped the other ranks" : "");
  } else if (result.received_signal != 0) {
    result.message = detail::concat("received ", signal_name(result.received_signal),
                                    "; forwarded it to the ranks and stopped them");
  } else if (result.timed_out) {
    result.message = detail::concat("ranks still running after the ", timeout->count(),
                                    " ms timeout; stopped them");
  }
  children_.clear();
  first_failure_.reset();
  return result;
}

std::optional<RankExit> ProcessLauncher::poll() {
  pump_output(0, -1);
  observe_exits(false);
  return first_failure_;
}

void ProcessLauncher::stop_all() {
  if (children_.empty()) return;
  signal_running(SIGTERM);
  Deadline kill_at = deadline_after(options_.grace_period);
  observe_exits(true);
  while (!all_exited() && Clock::now() < kill_at) {
    pump_output(kTickMs, -1);
    observe_exits(true);
  }
  for (auto& child : children_) {
    child.out.reset();
    child.err.reset();
    flush_partial(child);
  }
  kill_groups_and_reap();
  children_.clear();
  first_failure_.reset();
}

}  // namespace loom::dist
