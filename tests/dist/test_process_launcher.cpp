// Tests of ProcessLauncher with /bin/sh scripts as ranks: output prefixing, failure reporting
// and stopping of the other ranks, SIGKILL escalation, helpers in a rank's process group,
// timeouts, signal forwarding and start-up errors; the restart loop of elastic_restart.h
// (whole-group restarts, the attempt counter, giving up naming the rank). Ranks sleep at most 30 s and every test
// bounds its wait, so a broken launcher fails a test instead of hanging it.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "dist/elastic_restart.h"
#include "dist/process_launcher.h"
#include "core/error.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;

// A temporary file that collects a stream's output.
class TempFile {
 public:
  TempFile() {
    char name[] = "/tmp/loom_launcher_XXXXXX";
    fd_.reset(::mkstemp(name));
    path_ = name;
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  std::string read() const {
    std::ifstream in(path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  UniqueFd fd_;
  std::string path_;
};

ProcessSpec shell(int rank, const std::string& script, EnvMap env = {}) {
  return ProcessSpec{rank, {"/bin/sh", "-c", script}, std::move(env)};
}

struct Fixture {
  TempFile out, err;
  LauncherOptions options(std::chrono::milliseconds grace = 2s) {
    LauncherOptions o;
    o.stdout_fd = out.fd();
    o.stderr_fd = err.fd();
    o.grace_period = grace;
    return o;
  }
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(ProcessLauncher, PrefixesEveryLineOfEveryRank) {
  Fixture f;
  ProcessLauncher launcher(f.options());
  for (int r = 0; r < 2; ++r) {
    launcher.spawn(shell(r, "echo \"hello $R\"; echo two; printf 'no newline'; echo oops >&2",
                         {{"R", std::to_string(r)}}));
  }
  LaunchResult result = launcher.wait(10s);
  EXPECT_TRUE(result.ok()) << result.message;
  EXPECT_EQ(result.exit_code(), 0);
  ASSERT_EQ(result.exits.size(), 2u);
  std::string out = f.out.read();
  // Whole lines of different ranks may interleave, lines never do; a missing final newline
  // is added when the rank's output ends.
  for (int r = 0; r < 2; ++r) {
    std::string p = "[rank " + std::to_string(r) + "] ";
    for (std::string line :
         {"hello " + std::to_string(r), std::string("two"), std::string("no newline")}) {
      EXPECT_NE(out.find(p + line + "\n"), std::string::npos) << out;
    }
  }
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 6) << out;
  EXPECT_NE(f.err.read().find("[rank 1] oops\n"), std::string::npos) << f.err.read();
}

TEST(ProcessLauncher, FailedRankIsReportedAndTheOthersStopped) {
  Fixture f;
  ProcessLauncher launcher(f.options());
  launcher.spawn(shell(0, "echo started; sleep 30"));
  launcher.spawn(shell(1, "sleep 0.2; exit 3"));
  auto start = std::chrono::steady_clock::now();
  LaunchResult result = launcher.wait(10s);
  EXPECT_LT(seconds_since(start), 3.0);
  EXPECT_EQ(result.message, "rank 1 exited with status 3; stopped the other ranks");
  EXPECT_EQ(result.exit_code(), 3);
  ASSERT_TRUE(result.first_failure.has_value());
  EXPECT_EQ(result.first_failure->rank, 1);
  EXPECT_TRUE(result.exits[0].stopped_by_launcher);
  EXPECT_TRUE(result.exits[0].signaled);
  EXPECT_EQ(result.exits[0].code, SIGTERM);
  EXPECT_NE(f.out.read().find("[rank 0] started"), std::string::npos);
  EXPECT_EQ(launcher.num_running(), 0u);
}

TEST(ProcessLauncher, RankKilledBySignalIsReported) {
  Fixture f;
  ProcessLauncher launcher(f.options());
  launcher.spawn(shell(0, "sleep 30"));
  launcher.spawn(shell(1, "kill -9 $$"));
  LaunchResult result = launcher.wait(10s);
  EXPECT_EQ(result.message, "rank 1 was killed by signal 9 (SIGKILL); stopped the other ranks");
  EXPECT_EQ(result.exit_code(), 128 + 9);
}

TEST(ProcessLauncher, RankIgnoringSigtermIsKilledAfterTheGracePeriod) {
  Fixture f;
  ProcessLauncher launcher(f.options(300ms));
  launcher.spawn(shell(0, "trap '' TERM; echo ready; sleep 30"));
  launcher.spawn(shell(1, "sleep 0.3; exit 1"));
  auto start = std::chrono::steady_clock::now();
  LaunchResult result = launcher.wait(10s);
  EXPECT_LT(seconds_since(start), 3.0);
  EXPECT_EQ(result.exit_code(), 1);
  EXPECT_TRUE(result.exits[0].signaled);
  EXPECT_EQ(result.exits[0].code, SIGKILL);
}

TEST(ProcessLauncher, HelpersInARanksGroupAreStoppedToo) {
  Fixture f;
  ProcessLauncher launcher(f.options(300ms));
  // The background sleep holds the stdout pipe; only a group-wide stop releases it.
  launcher.spawn(shell(0, "trap '' TERM; sleep 30 & echo helper $!; wait"));
  launcher.spawn(shell(1, "sleep 0.3; exit 2"));
  auto start = std::chrono::steady_clock::now();
  LaunchResult result = launcher.wait(10s);
  EXPECT_LT(seconds_since(start), 3.0);
  EXPECT_EQ(result.exit_code(), 2);
  std::string out = f.out.read();
  auto at = out.find("[rank 0] helper ");
  ASSERT_NE(at, std::string::npos) << out;
  pid_t helper = std::stoi(out.substr(at + 16));
  // The helper was re-parented; dead means gone or a zombie (containers' init may not reap).
  auto dead = [helper] {
    std::ifstream stat("/proc/" + std::to_string(helper) + "/stat");
    std::string pid, comm, state;
    return !(stat >> pid >> comm >> state) || state == "Z";
  };
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = dead();
    if (!gone) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(gone) << "helper " << helper << " survived";
}

TEST(ProcessLauncher, TimeoutStopsEveryRank) {
  Fixture f;
  ProcessLauncher launcher(f.options(300ms));
  launcher.spawn(shell(0, "sleep 30"));
  auto start = std::chrono::steady_clock::now();
  LaunchResult result = launcher.wait(300ms);
  EXPECT_LT(seconds_since(start), 3.0);
  EXPECT_TRUE(result.timed_out);
  EXPECT_EQ(result.exit_code(), 124);
  EXPECT_NE(result.message.find("timeout"), std::string::npos);
}

TEST(ProcessLauncher, ForwardsSigintToTheRanks) {
  Fixture f;
  LauncherOptions options = f.options();
  options.forward_signals = true;
  ProcessLauncher launcher(options);
  launcher.spawn(shell(0,
                       "trap 'echo got INT; exit 5' INT; echo ready; "
                       "while :; do sleep 0.05; done"));
  std::thread interrupter([] {
    std::this_thread::sleep_for(300ms);
    ::kill(::getpid(), SIGINT);
  });
  LaunchResult result = launcher.wait(10s);
  interrupter.join();
  EXPECT_EQ(result.received_signal, SIGINT);
  EXPECT_EQ(result.exit_code(), 130);
  EXPECT_EQ(result.message, "received SIGINT; forwarded it to the ranks and stopped them");
  EXPECT_NE(f.out.read().find("[rank 0] got INT"), std::string::npos) << f.out.read();
  // The previous SIGINT disposition (default for gtest) is back.
  struct sigaction now {};
  ::sigaction(SIGINT, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
}

TEST(ProcessLauncher, StartErrorsNameTheProgram) {
  Fixture f;
  ProcessLauncher launcher(f.options());
  try {
    launcher.spawn(ProcessSpec{2, {"no-such-program-loom"}, {}});
    FAIL() << "expected an error";
  } catch (const RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not found in PATH"), std::string::npos) << e.what();
  }
  try {
    launcher.spawn(ProcessSpec{0, {"/etc/hostname"}, {}});  // not a program
    FAIL() << "expected an error";
  } catch (const RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("executing '/etc/hostname' failed: "), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(launcher.spawn(ProcessSpec{0, {}, {}}), ValueError);
  EXPECT_EQ(launcher.num_running(), 0u);
}

TEST(ProcessLauncher, PollSeesAFailureWithoutStopping) {
  Fixture f;
  ProcessLauncher launcher(f.options(300ms));
  launcher.spawn(shell(0, "sleep 30"));
  launcher.spawn(shell(1, "exit 4"));
  std::optional<RankExit> failure;
  for (int i = 0; i < 200 && !failure; ++i) {
    failure = launcher.poll();
    if (!failure) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->rank, 1);
  EXPECT_EQ(failure->describe(), "exited with status 4");
  EXPECT_EQ(launcher.num_running(), 1u);
  launcher.stop_all();
  EXPECT_EQ(launcher.num_running(), 0u);
}

TEST(ProcessLauncher, DestructorStopsRanksStillRunning) {
  Fixture f;
  std::chrono::steady_clock::time_point start;
  {
    ProcessLauncher launcher(f.options(500ms));
    launcher.spawn(shell(0, "sleep 30"));
    launcher.spawn(shell(1, "trap '' TERM; echo ready; sleep 30"));
    // Wait until rank 1 ignores SIGTERM, so the destructor has to escalate to SIGKILL.
    for (int i = 0; i < 200 && f.out.read().find("ready") == std::string::npos; ++i) {
      launcher.poll();
      std::this_thread::sleep_for(10ms);
    }
    start = std::chrono::steady_clock::now();
  }
  double took = seconds_since(start);
  EXPECT_GE(took, 0.4);
  EXPECT_LT(took, 3.0);
}

TEST(ProcessLauncher, LaunchesALoomrunStyleJob) {
  Fixture f;
  ProcessLauncher launcher(f.options());
  for (int local = 0; local < 3; ++local) {
    RankLayout layout{.nproc_per_node = 3,
                      .nnodes = 2,
                      .node_rank = 1,
                      .local_rank = local,
                      .master_addr = "127.0.0.1",
                      .master_port = 29999};
    EnvMap vars = loomrun_variables(layout);
    launcher.spawn(shell(std::stoi(vars.at("RANK")),
                         "echo $RANK/$WORLD_SIZE/$LOCAL_RANK/$NODE_RANK/$MASTER_PORT", vars));
  }
  LaunchResult result = launcher.wait(10s);
  ASSERT_TRUE(result.ok()) << result.message;
  std::string out = f.out.read();
  EXPECT_NE(out.find("[rank 3] 3/6/0/1/29999\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[rank 5] 5/6/2/1/29999\n"), std::string::npos) << out;
}

TEST(ProcessLauncher, InheritModeLeavesOutputAlone) {
  LauncherOptions options;
  options.output = OutputMode::kInherit;
  ProcessLauncher launcher(options);
  launcher.spawn(ProcessSpec{0, {"true"}, {}});
  launcher.spawn(ProcessSpec{1, {"false"}, {}});
  LaunchResult result = launcher.wait(10s);
  EXPECT_EQ(result.message, "rank 1 exited with status 1; stopped the other ranks");
}

TEST(ProcessLauncher, NamesTheKilledRankOverAPeerThatFailedBecauseOfIt) {
  // Rank 0 exits with a status as soon as rank 1 is dead (a zombie: the launcher reaps at the
  // end), as a rank whose collective lost its peer does; both are often first seen by the
  // same check (Note [Naming the cause]).
  Fixture f;
  TempFile pid_file;
  ProcessLauncher launcher(f.options());
  launcher.spawn(shell(0, "while [ ! -s \"$P\" ]; do sleep 0.001; done; "
                          "while ! grep -q 'State:.Z' /proc/$(cat \"$P\")/status; do :; done; exit 1",
                       {{"P", pid_file.path()}}));
  launcher.spawn(shell(1, "echo $$ > \"$P\"; kill -9 $$", {{"P", pid_file.path()}}));
  LaunchResult result = launcher.wait(10s);
  ASSERT_TRUE(result.first_failure.has_value()) << result.message;
  EXPECT_EQ(result.first_failure->rank, 1) << result.message;
  EXPECT_EQ(result.exit_code(), 128 + SIGKILL);
}

// ---- run_with_restarts (elastic_restart.h) ----

TEST(ElasticRestart, RestartsTheWholeGroupWithAFreshRendezvousAfterARankIsKilled) {
  Fixture f;
  ProcessLauncher launcher(f.options(1s));
  std::vector<int> attempts;
  auto make_group = [&](int attempt) {
    attempts.push_back(attempt);
    std::vector<ProcessSpec> ranks;
    // On the first attempt rank 1 is killed while rank 0 would run for 30 s: the launcher
    // must stop rank 0 before it starts the group again.
    EnvMap env{{"PORT", std::to_string(4000 + attempt)}};
    ranks.push_back(shell(0, "echo attempt $LOOM_RESTART_COUNT port $PORT; "
                             "if [ $LOOM_RESTART_COUNT = 0 ]; then exec sleep 30; fi", env));
    ranks.push_back(shell(1, "echo attempt $LOOM_RESTART_COUNT port $PORT; "
                             "if [ $LOOM_RESTART_COUNT = 0 ]; then kill -9 $$; fi", env));
    return ranks;
  };
  auto start = std::chrono::steady_clock::now();
  RestartResult result =
      run_with_restarts(launcher, make_group, {.max_restarts = 2, .log_fd = f.err.fd()});
  EXPECT_LT(seconds_since(start), 10.0);
  ASSERT_TRUE(result.ok()) << result.message << f.err.read();
  EXPECT_EQ(result.exit_code(), 0);
  EXPECT_EQ(result.restarts, 1);
  EXPECT_EQ(attempts, (std::vector<int>{0, 1}));
  ASSERT_EQ(result.failures.size(), 1u);
  EXPECT_EQ(result.failures[0].rank, 1);
  EXPECT_TRUE(result.failures[0].signaled);
  EXPECT_EQ(result.failures[0].code, SIGKILL);
  std::string out = f.out.read(), err = f.err.read();
  for (std::string line : {"[rank 0] attempt 0 port 4000\n", "[rank 1] attempt 0 port 4000\n",
                           "[rank 0] attempt 1 port 4001\n", "[rank 1] attempt 1 port 4001\n"})
    EXPECT_NE(out.find(line), std::string::npos) << line << " missing from\n" << out;
  EXPECT_EQ(err, "loomrun: rank 1 was killed by signal 9 (SIGKILL); stopped the other ranks; "
                 "restarting all 2 ranks (restart 1 of 2, LOOM_RESTART_COUNT=1)\n");
  EXPECT_EQ(launcher.num_running(), 0u);
}

TEST(ElasticRestart, GivesUpAfterTheLastRestartNamingTheRank) {
  Fixture f;
  ProcessLauncher launcher(f.options(1s));
  int calls = 0;
  auto make_group = [&](int) {
    ++calls;
    return std::vector<ProcessSpec>{shell(0, "exec sleep 30"), shell(1, "exit 3")};
  };
  RestartResult result = run_with_restarts(
      launcher, make_group, {.max_restarts = 2, .who = "job", .log_fd = f.err.fd()});
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(result.restarts, 2);
  EXPECT_EQ(result.failures.size(), 3u);
  EXPECT_EQ(result.exit_code(), 3);
  EXPECT_EQ(result.message,
            "rank 1 exited with status 3; stopped the other ranks; no restart left "
            "(--max-restarts 2, all used)");
  std::string err = f.err.read();
  EXPECT_NE(err.find("job: rank 1 exited with status 3; stopped the other ranks; restarting all "
                     "2 ranks (restart 1 of 2, LOOM_RESTART_COUNT=1)\n"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("(restart 2 of 2, LOOM_RESTART_COUNT=2)\n"), std::string::npos) << err;
}

TEST(ElasticRestart, WithoutRestartsTheResultIsTheLaunchersOwn) {
  Fixture f;
  ProcessLauncher launcher(f.options(1s));
  auto make_group = [&](int) { return std::vector<ProcessSpec>{shell(0, "exit 4")}; };
  RestartResult result = run_with_restarts(launcher, make_group, {.log_fd = f.err.fd()});
  EXPECT_EQ(result.message, "rank 0 exited with status 4");
  EXPECT_EQ(result.exit_code(), 4);
  EXPECT_EQ(f.err.read(), "");
  EXPECT_THROW(run_with_restarts(launcher, make_group, {.max_restarts = -1}), ValueError);
}

}  // namespace
}  // namespace loom::dist
