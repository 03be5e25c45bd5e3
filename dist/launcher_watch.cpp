// One line on stderr when a rank stops because its launcher went; see launcher_watch.h.
#include "dist/launcher_watch.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace loom::dist {
namespace {

constexpr size_t kLineBytes = 2048;

// A line a signal handler may write: filled before the handler can read it.
struct Text {
  char bytes[kLineBytes];
  size_t size = 0;
  void set(const std::string& s) {
    size = std::min(s.size(), kLineBytes);
    std::memcpy(bytes, s.data(), size);
  }
};

// What the handlers read. Written by watch_parent before they are installed, except `error`,
// which is published through g_has_error.
struct WatchState {
  pid_t parent = 0;
  Text death_line;    // "loom: rank 1: rank 0 (train_mlp, pid 42), which started ... stopping\n"
  Text term_prefix;   // "loom: rank 1: stopped by SIGTERM"
  Text parent_named;  // "rank 0 (train_mlp, pid 42)"
  Text error;         // the first collective failure, on one line
  Text stopped_line;  // "loom: rank 1: rank 0 (train_mlp, pid 42), which started ... SIGCONT\n"
};
WatchState g_state;
std::atomic<bool> g_watching{false};
std::atomic<bool> g_error_claimed{false};
std::atomic<bool> g_has_error{false};
std::atomic<bool> g_reported{false};  // one line per process, whoever writes it
static_assert(std::atomic<bool>::is_always_lock_free, "the signal handlers need lock-free flags");

// The parent's stderr, opened while it lived: where the line goes when this rank's own
// stderr was a pipe to the launcher that just died (loomrun prefixes its ranks' output).
int g_parent_stderr = -1;

// Only async-signal-safe calls from here to the handlers' end.
bool write_fd(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

// Writes a line to stderr, else to the parent's. SIGPIPE is ignored meanwhile (a pipe whose
// reader died fails with EPIPE instead of killing this process silently).
void say(const char* p, size_t n) {
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGPIPE, &ignore, &old);
  if (!write_fd(STDERR_FILENO, p, n) && g_parent_stderr >= 0) write_fd(g_parent_stderr, p, n);
  ::sigaction(SIGPIPE, &old, nullptr);
}

struct LineBuffer {
  char bytes[3 * kLineBytes + 64];
  size_t size = 0;
  void add(const char* p, size_t n) {
    n = std::min(n, sizeof(bytes) - 1 - size);
    std::memcpy(bytes + size, p, n);
    size += n;
  }
  void add(const char* s) { add(s, std::strlen(s)); }
  void add(const Text& t) { add(t.bytes, t.size); }
  void add_number(long v) {
    char digits[24];
    int n = 0;
    unsigned long u = v < 0 ? 0ul - static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
    do digits[n++] = char('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0) add("-");
    while (n > 0) add(&digits[--n], 1);
  }
};

// Whether /proc says `pid` is stopped by a signal (state 'T'; not 't', a tracing stop).
bool stopped_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return false;
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'T';
}

[[noreturn]] void report_death_and_exit() {
  if (!g_reported.exchange(true)) say(g_state.death_line.bytes, g_state.death_line.size);
  ::_exit(1);
}

void on_parent_death(int, siginfo_t*, void*) {
  int saved = errno;
  // The kernel reparents before it signals; anything else sending this signal is ignored.
  if (::getppid() != g_state.parent) report_death_and_exit();
  errno = saved;
}

void on_sigterm(int sig, siginfo_t* info, void*) {
  if (!g_reported.exchange(true)) {
    LineBuffer line;
    line.add(g_state.term_prefix);
    pid_t from = info ? info->si_pid : 0;
    if (from == g_state.parent && from > 0) {
      line.add(" from ");
      line.add(g_state.parent_named);
    } else if (from > 0) {
      line.add(" from pid ");
      line.add_number(from);
    }
    if (g_has_error.load()) {
      line.add(" after its collective failed: ");
      line.add(g_state.error);
    }
    line.add("\n");
    say(line.bytes, line.size);
  }
  // Die of the SIGTERM itself (pending until this handler returns), as the sender expects.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
}

// Installs `handler` for `sig` when the signal still has its default action (or ours): a
// handler or SIG_IGN the program chose stays.
bool install_over_default(int sig, void (*handler)(int, siginfo_t*, void*)) {
  struct sigaction old {};
  if (::sigaction(sig, nullptr, &old) != 0) return false;
  bool info = (old.sa_flags & SA_SIGINFO) != 0;
  bool is_default = !info && old.sa_handler == SIG_DFL;
  bool is_ours = info && old.sa_sigaction == handler;
  if (!is_default && !is_ours) return false;
  struct sigaction action {};
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART | SA_SIGINFO;
  action.sa_sigaction = handler;
  return ::sigaction(sig, &action, nullptr) == 0;
}

std::string process_name(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

}  // namespace

int parent_death_signal() { return SIGRTMIN + 2; }

void watch_parent(int rank, pid_t parent, const std::string& who) {
  std::string name = process_name(parent);
  std::string named =
      who + " (" + (name.empty() ? "" : name + ", ") + "pid " + std::to_string(parent) + ")";
  std::string rank_prefix = "loom: rank " + std::to_string(rank) + ": ";
  g_state.parent = parent;
  g_state.parent_named.set(named);
  g_state.death_line.set(rank_prefix + named + ", which started this rank, died; stopping\n");
  g_state.term_prefix.set(rank_prefix + "stopped by SIGTERM");
  g_state.stopped_line.set(rank_prefix + named +
                           ", which started this rank, is stopped (SIGSTOP, Ctrl-Z) and this "
                           "rank's collective failed; sending it SIGCONT so that the job can end\n");
  if (g_parent_stderr < 0)
    g_parent_stderr = ::open(("/proc/" + std::to_string(parent) + "/fd/2").c_str(),
                             O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK);
  int death = parent_death_signal();
  // A program that took that signal for itself keeps the silent SIGKILL: still no orphan.
  ::prctl(PR_SET_PDEATHSIG, install_over_default(death, on_parent_death) ? death : SIGKILL);
  install_over_default(SIGTERM, on_sigterm);
  g_watching = true;
  if (::getppid() != parent) report_death_and_exit();  // it went before the watch began
}

void watch_launcher(int rank) {
  const char* pid_text = std::getenv(kLauncherPidVariable);
  if (!pid_text || !*pid_text) return;
  pid_t pid = 0;
  const char* end = pid_text + std::strlen(pid_text);
  auto [ptr, ec] = std::from_chars(pid_text, end, pid);
  // A launcher further up the tree, whose variables this process inherited: not ours to watch.
  if (ec != std::errc() || ptr != end || pid <= 1 || pid != ::getppid()) return;
  const char* who = std::getenv(kLauncherNameVariable);
  watch_parent(rank, pid, who && *who ? who : "the launcher");
}

bool watching_parent() { return g_watching.load(); }

void stop_if_launcher_died(const std::string& error, std::chrono::milliseconds wait) {
  if (!g_watching.load()) return;
  if (!g_error_claimed.exchange(true)) {
    std::string flat = error;
    for (char& c : flat)
      if (c == '\n' || c == '\r') c = ' ';
    g_state.error.set(flat);
    g_has_error = true;
  }
  auto until = std::chrono::steady_clock::now() + wait;
  do {
    if (::getppid() != g_state.parent) report_death_and_exit();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } while (std::chrono::steady_clock::now() < until);
  // Note [Stopped launcher]: a launcher stopped by SIGSTOP (or Ctrl-Z: Fabric's "ddp" rank 0
  // is the terminal's job, its ranks are not) runs no code, so it can neither fail its own
  // collective nor see its ranks exit (SIGCHLD waits until it runs), and the job would stay
  // stopped for ever after every other rank timed out. The rank whose collective failed
  // continues it, once: rank 0's own collective then fails at its passed deadline (or on the
  // ranks already gone), and it stops the job as after any failure. A process stopped by a
  // debugger (ptrace, state 't') is left alone.
  static std::atomic<bool> continued{false};
  if (stopped_state(g_state.parent) && !continued.exchange(true)) {
    say(g_state.stopped_line.bytes, g_state.stopped_line.size);
    ::kill(g_state.parent, SIGCONT);
  }
}

}  // namespace loom::dist
