// When rank 0 or the launcher of a DDP job is killed (kill -9), every surviving rank writes
// one line on stderr saying why it stops, and ends within a bounded time: Fabric's "ddp"
// (rank 0 re-executed the others), "ddp_spawn" (rank 0 forked them), loomrun killed, and
// rank 0 killed under loomrun (which then stops the others with SIGTERM). See
// dist/launcher_watch.h for the mechanism and ddp_harness.h for the scenarios.
//
// The job runs under `sh -c 'exec ... >>log 2>&1'`, so every process of it writes straight to
// the log file, which outlives them all (a pipe to a launcher would die with the launcher).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "dist/process_launcher.h"
#include "fabric/ddp.h"
#include "fabric/fabric.h"
#include "tests/fabric/ddp_harness.h"

namespace loom::ddptest {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Both ranks record their pid and parent, then run collectives until killed (30 s at most).
// A collective error is kept and the rank goes on waiting: the launcher stops it.
LOOM_DDP_SCENARIO(until_killed) {
  std::string strategy = job_env("LOOM_DDP_STRATEGY", "ddp");
  Fabric fabric({.accelerator = "cpu", .strategy = strategy, .devices = 2});
  auto body = [](Fabric& f) {
    int r = f.global_rank();
    record(r, "pid", double(::getpid()));
    record(r, "ppid", double(::getppid()));
    auto until = std::chrono::steady_clock::now() + 30s;
    try {
      while (std::chrono::steady_clock::now() < until) {
        f.all_reduce(1.0);
        std::this_thread::sleep_for(5ms);
      }
    } catch (const std::exception&) {
      std::this_thread::sleep_until(until);
    }
  };
  if (strategy == "ddp_spawn") {
    fabric.launch(body);
  } else {
    fabric.launch();
    body(fabric);
  }
}

// Both ranks record their pid and parent, then run collectives (2 s timeout) until one fails,
// and let the error end the rank (rank 0 then stops the job, as after any failure).
LOOM_DDP_SCENARIO(until_failure) {
  auto strategy = std::make_shared<DDPStrategy>(DDPOptions{.timeout = 2s});
  Fabric fabric({.accelerator = "cpu", .strategy = strategy, .devices = 2});
  fabric.launch();
  int r = fabric.global_rank();
  record(r, "pid", double(::getpid()));
  record(r, "ppid", double(::getppid()));
  auto until = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < until) {
    fabric.all_reduce(1.0);
    std::this_thread::sleep_for(5ms);
  }
}

bool exited(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

// The lines of `text` that contain `needle`.
std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) out.push_back(line);
  return out;
}

struct RunningJob {
  std::string dir;
  std::unique_ptr<dist::ProcessLauncher> launcher;
  std::vector<pid_t> pids, ppids;  // per rank, once both reported

  RunningJob(const std::vector<std::string>& command, dist::EnvMap env) {
    char tmpl[] = "/tmp/loom_ddp_stop_XXXXXX";
    dir = ::mkdtemp(tmpl);
    env.emplace("LOOM_DDP_SCENARIO", "until_killed");  // unless the test names another
    env["LOOM_DDP_DIR"] = dir;
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$@\" >>'" + dir + "/log' 2>&1", "sh"};
    argv.insert(argv.end(), command.begin(), command.end());
    launcher = std::make_unique<dist::ProcessLauncher>(
        dist::LauncherOptions{.output = dist::OutputMode::kInherit, .grace_period = 1s});
    launcher->spawn({0, argv, env});
  }
  ~RunningJob() {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, SIGKILL);
    launcher.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  // Waits until both ranks recorded their pids (false after 40 s).
  bool started() {
    Job view;
    view.dir = dir;
    for (int i = 0; i < 400; ++i) {
      RankRecord zero = view.rank(0), one = view.rank(1);
      if (zero.has("ppid") && one.has("ppid")) {
        pids = {pid_t(zero.value("pid")), pid_t(one.value("pid"))};
        ppids = {pid_t(zero.value("ppid")), pid_t(one.value("ppid"))};
        return true;
      }
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  // Waits until every process of `ranks` has exited (false after `limit`).
  bool ranks_exit(const std::vector<int>& ranks, std::chrono::milliseconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      bool all = true;
      for (int r : ranks) all = all && exited(pids[size_t(r)]);
      if (all) return true;
      if (std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(20ms);
    }
  }
  std::string log() {
    std::ifstream in(dir + "/log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
};

std::string died_line(int rank, const std::string& who, const std::string& program, pid_t pid) {
  return "loom: rank " + std::to_string(rank) + ": " + who + " (" + program + ", pid " +
         std::to_string(pid) + "), which started this rank, died; stopping";
}

void expect_survivor_says_rank0_died(const std::string& strategy) {
  RunningJob job({self_exe(), "--gtest_filter=DdpChild.Run"}, {{"LOOM_DDP_STRATEGY", strategy}});
  ASSERT_TRUE(job.started()) << job.log();
  ASSERT_EQ(job.ppids[1], job.pids[0]) << "rank 0 started rank 1";
  ::kill(job.pids[0], SIGKILL);
  EXPECT_TRUE(job.ranks_exit({1}, 10s)) << "rank 1 outlived rank 0\n" << job.log();
  std::string log = job.log();
  EXPECT_THAT(lines_with(log, "loom: rank 1"),
              ::testing::ElementsAre(died_line(1, "rank 0", "test_fabric", job.pids[0])))
      << log;
}

TEST(DdpStop, WhenRankZeroIsKilledTheRanksItStartedSaySoAndStop) {
  expect_survivor_says_rank0_died("ddp");
}

TEST(DdpStop, WhenRankZeroIsKilledTheRanksItForkedSaySoAndStop) {
  expect_survivor_says_rank0_died("ddp_spawn");
}

std::string loomrun_path() { return build_output("LOOM_LOOMRUN", "../tools/loomrun"); }

TEST(DdpStop, WhenLoomrunIsKilledEveryRankSaysSoAndStops) {
  std::string loomrun = loomrun_path();
  if (loomrun.empty())
    GTEST_SKIP() << "loomrun is not built next to this test binary (set LOOM_LOOMRUN)";
  RunningJob job({loomrun, "--nproc-per-node", "2", "--grace-period", "1", self_exe(),
                  "--gtest_filter=DdpChild.Run"},
                 {});
  ASSERT_TRUE(job.started()) << job.log();
  pid_t launcher = job.ppids[0];
  ASSERT_EQ(job.ppids[1], launcher) << "both ranks are loomrun's";
  ::kill(launcher, SIGKILL);
  EXPECT_TRUE(job.ranks_exit({0, 1}, 10s)) << "a rank outlived loomrun\n" << job.log();
  std::string log = job.log();
  for (int r = 0; r < 2; ++r)
    EXPECT_THAT(lines_with(log, "loom: rank " + std::to_string(r)),
                ::testing::ElementsAre(died_line(r, "the launcher", "loomrun", launcher)))
        << log;
}

TEST(DdpStop, WhenRankZeroIsKilledUnderLoomrunTheOthersSayTheLauncherStoppedThem) {
  std::string loomrun = loomrun_path();
  if (loomrun.empty())
    GTEST_SKIP() << "loomrun is not built next to this test binary (set LOOM_LOOMRUN)";
  RunningJob job({loomrun, "--nproc-per-node", "2", "--grace-period", "1", self_exe(),
                  "--gtest_filter=DdpChild.Run"},
                 {});
  ASSERT_TRUE(job.started()) << job.log();
  pid_t launcher = job.ppids[0];
  ::kill(job.pids[0], SIGKILL);
  EXPECT_TRUE(job.ranks_exit({1}, 10s)) << "rank 1 outlived rank 0\n" << job.log();
  EXPECT_FALSE(job.launcher->wait(10s).timed_out) << "loomrun ends once it stopped rank 1";
  std::string log = job.log();
  std::vector<std::string> said = lines_with(log, "loom: rank 1");
  ASSERT_EQ(said.size(), 1u) << log;
  EXPECT_THAT(said[0], StartsWith("[rank 1] loom: rank 1: stopped by SIGTERM from the launcher "
                                  "(loomrun, pid " +
                                  std::to_string(launcher) + ")"));
  EXPECT_THAT(log, HasSubstr("rank 0 was killed by signal 9"));
}

// Rank 0 of a Fabric "ddp" launch stopped (SIGSTOP) runs nothing: rank 1 times out (2 s),
// sends rank 0 SIGCONT with one line saying why (Note [Stopped launcher] in
// dist/launcher_watch.cpp), and rank 0's own collective fails; the whole job ends.
TEST(DdpStop, AStoppedRankZeroIsContinuedAndTheJobEnds) {
  RunningJob job({self_exe(), "--gtest_filter=DdpChild.Run"},
                 {{"LOOM_DDP_SCENARIO", "until_failure"}});
  ASSERT_TRUE(job.started()) << job.log();
  ASSERT_EQ(job.ppids[1], job.pids[0]) << "rank 0 started rank 1";
  const auto start = std::chrono::steady_clock::now();
  ::kill(job.pids[0], SIGSTOP);
  EXPECT_TRUE(job.ranks_exit({0, 1}, 15s)) << "the job outlived a stopped rank 0\n" << job.log();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, 10.0) << job.log();
  std::string log = job.log();
  EXPECT_THAT(lines_with(log, "loom: rank 1"),
              ::testing::ElementsAre(
                  "loom: rank 1: rank 0 (test_fabric, pid " + std::to_string(job.pids[0]) +
                  "), which started this rank, is stopped (SIGSTOP, Ctrl-Z) and this rank's "
                  "collective failed; sending it SIGCONT so that the job can end"))
      << log;
  EXPECT_THAT(log, HasSubstr("timeout 2000 ms")) << log;
  std::cerr << "[ stopped rank 0: the job ended " << took << " s after SIGSTOP ]\n";
}

}  // namespace
}  // namespace loom::ddptest
