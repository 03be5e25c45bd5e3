// Tests of dist/launcher_watch.h with real processes: a "launcher" process A forks a "rank"
// B that watches A; killing A with SIGKILL must make B write exactly its one line on stderr and
// end within a bounded time; a SIGTERM makes B write one line naming the sender and die of the
// SIGTERM; a program's own SIGTERM disposition is kept; a collective failure while A lives
// returns after the wait. Every process here ends by alarm() within 30 s whatever happens.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "dist/launcher_watch.h"
#include "dist/process_launcher.h"
#include "dist/unique_fd.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// True once `pid` has exited (gone, or a zombie nobody reaped yet), waiting up to `limit`.
bool exits_within(pid_t pid, std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    size_t paren = line.rfind(')');
    if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z')
      return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(10ms);
  }
}

// What rank B does once it watches its parent A, before it waits to be ended.
enum class RankB { wait, ignore_sigterm, collective_failure };

// A (the launcher, our child) and B (the rank, A's child, watching A). B's stderr goes to
// `err_path`. A reaps B and exits with 0 when B died of SIGTERM, 1 otherwise.
struct Family {
  pid_t a = 0, b = 0;
  std::string err_path;
  double b_wait_seconds = -1;  // RankB::collective_failure: how long stop_if_launcher_died took

  explicit Family(RankB mode) {
    char name[] = "/tmp/loom_watch_XXXXXX";
    UniqueFd err(::mkstemp(name));
    err_path = name;
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    UniqueFd read_end(fds[0]), write_end(fds[1]);
    a = ::fork();
    if (a == 0) {
      ::alarm(30);
      pid_t launcher = ::getpid();
      pid_t b_pid = ::fork();
      if (b_pid == 0) {
        ::alarm(30);
        ::dup2(err.get(), STDERR_FILENO);
        if (mode == RankB::ignore_sigterm) ::signal(SIGTERM, SIG_IGN);
        watch_parent(1, launcher, "rank 0");
        double waited = -1;
        if (mode == RankB::collective_failure) {
          auto start = std::chrono::steady_clock::now();
          stop_if_launcher_died("GlooProcessGroup: all_reduce failed:\nrank 0 closed", 300ms);
          waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
        double report[2] = {double(::getpid()), waited};
        [[maybe_unused]] ssize_t n = ::write(write_end.get(), report, sizeof report);
        for (;;) ::pause();
      }
      int status = 0;
      ::waitpid(b_pid, &status, 0);
      ::_exit(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM ? 0 : 1);
    }
    write_end.reset();
    pollfd p{read_end.get(), POLLIN, 0};
    double report[2] = {0, -1};
    if (::poll(&p, 1, 20000) == 1 &&
        ::read(read_end.get(), report, sizeof report) == sizeof report) {
      b = pid_t(report[0]);
      b_wait_seconds = report[1];
    }
  }
  ~Family() {
    if (b > 0) ::kill(b, SIGKILL);
    if (a > 0) {
      ::kill(a, SIGKILL);
      ::waitpid(a, nullptr, 0);
    }
    ::unlink(err_path.c_str());
  }
  std::string err() const { return read_file(err_path); }
  // A's verdict on B's end (true: B died of SIGTERM); false when A does not end in time.
  bool b_died_of_sigterm() {
    for (int i = 0; i < 1000; ++i) {
      int status = 0;
      if (::waitpid(a, &status, WNOHANG) == a) {
        a = 0;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
};

std::string death_line(pid_t a) {
  return "loom: rank 1: rank 0 (test_dist, pid " + std::to_string(a) +
         "), which started this rank, died; stopping\n";
}

TEST(LauncherWatch, ARankWhoseLauncherIsKilledSaysSoInOneLineAndEnds) {
  Family f(RankB::wait);
  ASSERT_GT(f.b, 0) << "rank B did not start";
  pid_t a = f.a;
  auto start = std::chrono::steady_clock::now();
  ::kill(a, SIGKILL);
  ::waitpid(a, nullptr, 0);
  f.a = 0;
  EXPECT_TRUE(exits_within(f.b, 10s)) << "rank B outlived its launcher";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(f.err(), death_line(a));
}

TEST(LauncherWatch, ASigtermIsNamedWithItsSenderAndStillEndsTheRank) {
  Family f(RankB::wait);
  ASSERT_GT(f.b, 0) << "rank B did not start";
  ::kill(f.b, SIGTERM);
  EXPECT_TRUE(f.b_died_of_sigterm()) << f.err();
  EXPECT_EQ(f.err(),
            "loom: rank 1: stopped by SIGTERM from pid " + std::to_string(::getpid()) + "\n");
}

TEST(LauncherWatch, AProgramsOwnSigtermDispositionIsKept) {
  Family f(RankB::ignore_sigterm);
  ASSERT_GT(f.b, 0) << "rank B did not start";
  ::kill(f.b, SIGTERM);
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(exits_within(f.b, 0ms)) << "SIG_IGN was replaced";
  EXPECT_EQ(f.err(), "");
  pid_t a = f.a;
  ::kill(a, SIGKILL);
  ::waitpid(a, nullptr, 0);
  f.a = 0;
  EXPECT_TRUE(exits_within(f.b, 10s));
  EXPECT_EQ(f.err(), death_line(a));
}

TEST(LauncherWatch, ACollectiveFailureWhileTheLauncherLivesReturnsAndASigtermThenCarriesIt) {
  Family f(RankB::collective_failure);
  ASSERT_GT(f.b, 0) << "rank B did not start";
  EXPECT_GE(f.b_wait_seconds, 0.29);
  EXPECT_LT(f.b_wait_seconds, 5.0);
  EXPECT_EQ(f.err(), "") << "nothing is said while the error goes to the caller";
  ::kill(f.b, SIGTERM);
  EXPECT_TRUE(f.b_died_of_sigterm()) << f.err();
  EXPECT_EQ(f.err(),
            "loom: rank 1: stopped by SIGTERM from pid " + std::to_string(::getpid()) +
                " after its collective failed: GlooProcessGroup: all_reduce failed: rank 0 "
                "closed\n");
}

TEST(LauncherWatch, InheritedLauncherVariablesOfAnotherProcessWatchNothing) {
  ASSERT_FALSE(watching_parent());
  ::setenv(kLauncherPidVariable, std::to_string(::getpid()).c_str(), 1);  // not our parent
  watch_launcher(0);
  ::setenv(kLauncherPidVariable, "not a pid", 1);
  watch_launcher(0);
  ::unsetenv(kLauncherPidVariable);
  watch_launcher(0);
  EXPECT_FALSE(watching_parent());
}

TEST(LauncherWatch, TheLauncherNamesItselfInEveryRanksEnvironment) {
  char name[] = "/tmp/loom_watch_env_XXXXXX";
  UniqueFd out(::mkstemp(name));
  {
    LauncherOptions o;
    o.stdout_fd = out.get();
    o.name = "rank 0";
    ProcessLauncher launcher(o);
    launcher.spawn(
        ProcessSpec{1, {"/bin/sh", "-c", "echo \"$LOOM_LAUNCHER_PID/$LOOM_LAUNCHER_NAME\""}, {}});
    EXPECT_TRUE(launcher.wait(20s).ok());
  }
  EXPECT_EQ(read_file(name), "[rank 1] " + std::to_string(::getpid()) + "/rank 0\n");
  ::unlink(name);
}

}  // namespace
}  // namespace loom::dist
