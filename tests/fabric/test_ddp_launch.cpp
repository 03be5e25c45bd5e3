// Starting DDP processes on the CPU: "ddp" re-executes the program with the rank variables,
// "ddp_spawn" forks and reports a failing rank's message, devices=N gives N processes with a
// process group, a busy rendezvous port is named, and loomrun propagates failures and is
// detected by Fabric (which then starts nothing itself). See ddp_harness.h for how a test
// runs its ranks in child processes.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "dist/init.h"
#include "fabric/ddp.h"
#include "fabric/fabric.h"
#include "kernels/cpu/parallel.h"
#include "tests/fabric/ddp_harness.h"

namespace loom::ddptest {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::shared_ptr<DDPStrategy> ddp(bool spawn = false, std::chrono::milliseconds timeout = 10s) {
  return std::make_shared<DDPStrategy>(DDPOptions{.spawn = spawn, .timeout = timeout});
}

// Where every rank stands, from Fabric and from the environment the launch gave it.
LOOM_DDP_SCENARIO(where_am_i) {
  int world = job_env_int("LOOM_DDP_WORLD", 2);
  Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = world});  // by name
  fabric.launch();
  int r = fabric.global_rank();
  record(r, "pid", double(::getpid()));
  record(r, "ppid", double(::getppid()));
  record(r, "fabric", {double(r), double(fabric.world_size()), double(fabric.local_rank())});
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})
    record_text(r, v, job_env(v, "<unset>"));
  auto& strategy = dynamic_cast<DDPStrategy&>(fabric.strategy());
  const auto& group = strategy.process_group();
  record(r, "group", {double(group->rank()), double(group->size())});
  auto store = dist::store_of(*group);
  record(r, "store_port", double(store ? store->port() : -1));
  // The group works: the sum of the ranks.
  record(r, "rank_sum", fabric.all_reduce(double(r), ReduceOp::sum));
  fabric.barrier();
  record(r, "done", 1.0);
}

void expect_reexecuted_ranks(int world) {
  Job job = run_job("where_am_i", {{"LOOM_DDP_WORLD", std::to_string(world)}});
  ASSERT_TRUE(job.ok()) << job.describe();
  ASSERT_EQ(job.rank_files().size(), size_t(world)) << job.describe();
  RankRecord zero = job.rank(0);
  std::set<double> pids;
  for (int r = 0; r < world; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << "rank " << r << "\n" << job.describe();
    EXPECT_EQ(rec.values("fabric"), (std::vector<double>{double(r), double(world), double(r)}));
    EXPECT_EQ(rec.values("group"), (std::vector<double>{double(r), double(world)}));
    EXPECT_EQ(rec.value("rank_sum"), world * (world - 1) / 2.0);
    pids.insert(rec.value("pid"));
    if (r == 0) continue;
    // The others are rank 0's children, re-executed with the loomrun variables.
    EXPECT_EQ(rec.value("ppid"), zero.value("pid"));
    EXPECT_EQ(rec.text("RANK"), std::to_string(r));
    EXPECT_EQ(rec.text("LOCAL_RANK"), std::to_string(r));
    EXPECT_EQ(rec.text("WORLD_SIZE"), std::to_string(world));
    EXPECT_EQ(rec.text("LOCAL_WORLD_SIZE"), std::to_string(world));
    EXPECT_EQ(rec.text("MASTER_ADDR"), "127.0.0.1");
    // Every rank reached the store rank 0 hosts.
    EXPECT_EQ(rec.text("MASTER_PORT"), std::to_string(int(zero.value("store_port"))));
  }
  EXPECT_EQ(zero.text("RANK"), "<unset>");  // rank 0 is the process the user started
  EXPECT_EQ(pids.size(), size_t(world));
}

TEST(DdpLaunch, ReexecutesTheProgramWithTheRankVariablesTwoRanks) { expect_reexecuted_ranks(2); }
TEST(DdpLaunch, ReexecutesTheProgramWithTheRankVariablesThreeRanks) { expect_reexecuted_ranks(3); }

// LOOM_NUM_THREADS under DDP: a value the user set is every rank's thread count; a bad one
// fails launch() before any rank starts.
LOOM_DDP_SCENARIO(threads) {
  Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2});
  try {
    fabric.launch();
  } catch (const ValueError& e) {
    record_text(0, "error", e.what());
    return;
  }
  record(fabric.global_rank(), "threads", double(get_num_threads()));
  fabric.barrier();
}

TEST(DdpLaunch, EveryRankUsesTheThreadCountTheUserSet) {
  Job job = run_job("threads", {{"LOOM_NUM_THREADS", "3"}}, 30s);
  ASSERT_TRUE(job.ok()) << job.describe();
  for (int r = 0; r < 2; ++r) EXPECT_EQ(job.rank(r).value("threads"), 3.0) << job.describe();
}

TEST(DdpLaunch, ABadThreadCountFailsLaunchBeforeAnyRankStarts) {
  Job job = run_job("threads", {{"LOOM_NUM_THREADS", "3x"}}, 30s);
  ASSERT_TRUE(job.ok()) << job.describe();
  EXPECT_THAT(job.rank(0).text("error"),
              HasSubstr("LOOM_NUM_THREADS='3x' is invalid: it must be a positive integer"));
  EXPECT_EQ(job.rank_files().size(), 1u) << "no other rank ran\n" << job.describe();
}

// ---- ddp_spawn ----

LOOM_DDP_SCENARIO(spawn) {
  int world = job_env_int("LOOM_DDP_WORLD", 2);
  std::string mode = job_env("LOOM_DDP_MODE", "ok");
  Fabric fabric({.accelerator = "cpu", .strategy = ddp(/*spawn=*/true, 3s), .devices = world});
  try {
    int result = fabric.launch([&](Fabric& f, int base) {
      int r = f.global_rank();
      record(r, "pid", double(::getpid()));
      record(r, "ppid", double(::getppid()));
      if (mode == "ok") {
        record(r, "rank_sum", f.all_reduce(double(r + 1), ReduceOp::sum));
        f.barrier();
      } else if (r == 1 && (mode == "killed" || mode == "killed_then_collective")) {
        ::raise(SIGKILL);
      } else if (r == 1) {
        throw RuntimeError("boom");
      } else if (mode == "fail_then_collective" || mode == "killed_then_collective") {
        f.barrier();  // rank 1 is gone: this fails too, on rank 0's side
      }
      return base + r;
    }, 100);
    record(0, "result", double(result));
  } catch (const std::exception& e) {
    record_text(0, "error", e.what());
  }
  record(0, "done", 1.0);
}

// launch() without a function under ddp_spawn: refused before anything forks, and the same
// Fabric then launches with one.
LOOM_DDP_SCENARIO(spawn_without_function) {
  Fabric fabric({.accelerator = "cpu", .strategy = "ddp_spawn", .devices = 2});
  try {
    fabric.launch();
    record(fabric.global_rank(), "launched", 1.0);
  } catch (const ValueError& e) {
    record_text(0, "error", e.what());
  }
  record(0, "launched_after_error", fabric.launched() ? 1.0 : 0.0);
  int sum = fabric.launch(
      [](Fabric& f) { return int(f.all_reduce(double(f.global_rank() + 1), ReduceOp::sum)); });
  record(0, "rank_sum", double(sum));
}

TEST(DdpSpawn, LaunchWithoutAFunctionIsRefusedAtOnce) {
  Job job = run_job("spawn_without_function", {}, 30s);
  ASSERT_TRUE(job.ok()) << job.describe();
  RankRecord zero = job.rank(0);
  EXPECT_FALSE(zero.has("launched")) << job.describe();
  EXPECT_THAT(zero.text("error"), HasSubstr("'ddp_spawn' strategy")) << job.describe();
  EXPECT_THAT(zero.text("error"), HasSubstr("call fabric.launch(fn)"));
  EXPECT_EQ(zero.value("launched_after_error"), 0.0);
  EXPECT_EQ(zero.value("rank_sum"), 3.0) << job.describe();
  EXPECT_EQ(job.rank_files().size(), 1u) << "only rank 0 records\n" << job.describe();
}

TEST(DdpSpawn, ForksTheRanksAndReturnsRankZerosResult) {
  Job job = run_job("spawn", {{"LOOM_DDP_WORLD", "3"}});
  ASSERT_TRUE(job.ok()) << job.describe();
  RankRecord zero = job.rank(0);
  EXPECT_EQ(zero.value("result"), 100.0) << job.describe();
  EXPECT_EQ(zero.text("error"), "");
  for (int r = 0; r < 3; ++r) {
    RankRecord rec = job.rank(r);
    EXPECT_EQ(rec.value("rank_sum"), 6.0) << "rank " << r << "\n" << job.describe();
    if (r > 0) {
      EXPECT_EQ(rec.value("ppid"), zero.value("pid"));  // forked by rank 0
    }
  }
}

TEST(DdpSpawn, AFailingRankFailsLaunchWithItsMessage) {
  Job job = run_job("spawn", {{"LOOM_DDP_MODE", "fail"}});
  ASSERT_TRUE(job.ok()) << job.describe();
  RankRecord zero = job.rank(0);
  EXPECT_FALSE(zero.has("result"));
  EXPECT_THAT(zero.text("error"), HasSubstr("rank 1")) << job.describe();
  EXPECT_THAT(zero.text("error"), HasSubstr("boom"));
}

TEST(DdpSpawn, RankZerosOwnFailureStillReportsTheRankThatFailedFirst) {
  // Rank 1 throws; rank 0's next collective then fails because rank 1 is gone. The error
  // must still carry rank 1's message, the cause, not only rank 0's consequence.
  Job job = run_job("spawn", {{"LOOM_DDP_MODE", "fail_then_collective"}});
  ASSERT_TRUE(job.ok()) << job.describe();
  RankRecord zero = job.rank(0);
  EXPECT_FALSE(zero.has("result"));
  EXPECT_THAT(zero.text("error"), HasSubstr("rank 1")) << job.describe();
  EXPECT_THAT(zero.text("error"), HasSubstr("boom"));
}

TEST(DdpSpawn, AKilledRankFailsLaunchNamingTheSignal) {
  Job job = run_job("spawn", {{"LOOM_DDP_MODE", "killed"}});
  ASSERT_TRUE(job.ok()) << job.describe();
  RankRecord zero = job.rank(0);
  EXPECT_FALSE(zero.has("result"));
  EXPECT_THAT(zero.text("error"), HasSubstr("rank 1: killed by signal 9")) << job.describe();
}

TEST(DdpSpawn, RankZerosOwnFailureStillNamesTheSignalThatKilledARank) {
  // Rank 0 fails too (its barrier lost rank 1) and stops the other ranks with SIGTERM: a
  // rank that a different signal had already ended must still be reported as the cause.
  Job job = run_job("spawn", {{"LOOM_DDP_MODE", "killed_then_collective"}});
  ASSERT_TRUE(job.ok()) << job.describe();
  RankRecord zero = job.rank(0);
  EXPECT_FALSE(zero.has("result"));
  EXPECT_THAT(zero.text("error"), HasSubstr("rank 1: killed by signal 9")) << job.describe();
  EXPECT_THAT(zero.text("error"), HasSubstr("rank 0: ")) << job.describe();
}

// ---- rendezvous ----

LOOM_DDP_SCENARIO(port_in_use) {
  // A long rendezvous timeout: rank 1 would wait that long for the store that rank 0 could
  // not open, unless rank 0's failure stops it (the job's deadline is shorter).
  Fabric fabric({.accelerator = "cpu", .strategy = ddp(false, 120s), .devices = 2});
  try {
    fabric.launch();
    record(fabric.global_rank(), "launched", 1.0);
  } catch (const std::exception& e) {
    record_text(job_env("RANK", "0") == "0" ? 0 : 1, "error", e.what());
  }
}

TEST(DdpLaunch, RendezvousPortInUseIsNamed) {
  // A listening socket holds the port the job is told to use (MASTER_PORT).
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string port = std::to_string(ntohs(addr.sin_port));
  Job job = run_job("port_in_use", {{"MASTER_PORT", port}}, 30s);
  ::close(fd);
  EXPECT_FALSE(job.result.timed_out) << "rank 0 failed, so the job must end\n" << job.describe();
  RankRecord zero = job.rank(0);
  EXPECT_FALSE(zero.has("launched"));
  EXPECT_THAT(zero.text("error"), HasSubstr(port)) << job.describe();
  EXPECT_THAT(zero.text("error"), HasSubstr("in use")) << job.describe();
}

// ---- loomrun ----

std::string loomrun_path() { return build_output("LOOM_LOOMRUN", "../tools/loomrun"); }

TEST(Loomrun, AFailingRankFailsTheJobAndIsNamed) {
  std::string loomrun = loomrun_path();
  if (loomrun.empty()) GTEST_SKIP() << "loomrun is not built next to this test binary (set LOOM_LOOMRUN)";
  Job job = run_job("unused", {}, 30s,
                    {loomrun, "--nproc-per-node", "2", "--grace-period", "1", "/bin/sh", "-c",
                     "if [ \"$RANK\" = 1 ]; then exit 3; fi; sleep 20"});
  EXPECT_FALSE(job.result.timed_out) << job.describe();
  ASSERT_FALSE(job.ok()) << job.describe();
  EXPECT_EQ(job.result.exits.at(0).code, 3) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("rank 1"));
  EXPECT_THAT(job.output, HasSubstr("status 3"));
}

TEST(Loomrun, FabricDetectsTheLauncherAndStartsNoProcessItself) {
  std::string loomrun = loomrun_path();
  if (loomrun.empty()) GTEST_SKIP() << "loomrun is not built next to this test binary (set LOOM_LOOMRUN)";
  Job job = run_job("where_am_i", {{"LOOM_DDP_WORLD", "2"}}, 40s,
                    {loomrun, "--nproc-per-node", "2", "--grace-period", "1", self_exe(),
                     "--gtest_filter=DdpChild.Run"});
  ASSERT_TRUE(job.ok()) << job.describe();
  // Exactly the two processes loomrun started, each reporting once: no rank re-executed.
  ASSERT_EQ(job.rank_files().size(), 2u) << job.describe();
  RankRecord zero = job.rank(0), one = job.rank(1);
  EXPECT_EQ(zero.count("pid"), 1u);
  EXPECT_EQ(one.count("pid"), 1u);
  EXPECT_EQ(zero.value("ppid"), one.value("ppid"));  // siblings under loomrun
  EXPECT_EQ(zero.text("RANK"), "0");
  EXPECT_EQ(one.text("RANK"), "1");
  EXPECT_EQ(zero.value("rank_sum"), 1.0);
  EXPECT_EQ(one.value("done"), 1.0);
}

TEST(Loomrun, AWorldSizeThatDisagreesWithDevicesIsExplained) {
  std::string loomrun = loomrun_path();
  if (loomrun.empty()) GTEST_SKIP() << "loomrun is not built next to this test binary (set LOOM_LOOMRUN)";
  Job job = run_job("where_am_i", {{"LOOM_DDP_WORLD", "3"}}, 40s,
                    {loomrun, "--nproc-per-node", "2", "--grace-period", "1", self_exe(),
                     "--gtest_filter=DdpChild.Run"});
  EXPECT_FALSE(job.ok());
  EXPECT_FALSE(job.result.timed_out) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("started 2 processes")) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("loomrun --nproc-per-node 3"));
  EXPECT_TRUE(job.rank_files().empty()) << "no rank got past launch()";
}

TEST(DdpLaunch, TheTrainMlpExampleStartsItsOwnRanks) {
  std::string train = build_output("LOOM_TRAIN_MLP", "../examples/train_mlp");
  if (train.empty()) GTEST_SKIP() << "examples/train_mlp is not built next to this test binary";
  char tmpl[] = "/tmp/loom_train_mlp_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string out = tmpl;
  Job job = run_job("unused", {}, 60s,
                    {train, "--devices", "2", "--epochs", "2", "--hidden", "32", "--out", out});
  EXPECT_TRUE(job.ok()) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("world size 2"));
  EXPECT_EQ(job.output.find("accuracy"), job.output.rfind("accuracy")) << job.output;
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors"));
  std::filesystem::remove_all(out);
}

TEST(DdpLaunch, EachRunOfTheTrainMlpExampleLogsToItsOwnFolder) {
  std::string train = build_output("LOOM_TRAIN_MLP", "../examples/train_mlp");
  if (train.empty()) GTEST_SKIP() << "examples/train_mlp is not built next to this test binary";
  char tmpl[] = "/tmp/loom_train_mlp_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string out = tmpl;
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  for (int run = 0; run < 2; ++run) {
    Job job = run_job("unused", {}, 60s,
                      {train, "--devices", "2", "--epochs", "2", "--hidden", "8", "--out", out});
    ASSERT_TRUE(job.ok()) << job.describe();
    std::string folder = out + "/logs/version_" + std::to_string(run);
    EXPECT_THAT(job.output, HasSubstr(folder + "/metrics.csv"));
    // Only this run's rows: two epochs of train_loss, then the accuracy.
    std::string csv = read(folder + "/metrics.csv");
    EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4) << csv;
    EXPECT_EQ(csv.rfind("step,train_loss,accuracy\n0,", 0), 0u) << csv;
    // The TensorBoard logger of the run writes next to it.
    std::set<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(folder))
      files.insert(e.path().filename().string());
    ASSERT_EQ(files.size(), 2u) << "run " << run;
    EXPECT_EQ(files.count("metrics.csv"), 1u);
    EXPECT_EQ(files.begin()->rfind("events.out.tfevents.", 0), 0u) << *files.begin();
  }
  std::set<std::string> versions;
  for (const auto& e : std::filesystem::directory_iterator(out + "/logs"))
    versions.insert(e.path().filename().string());
  EXPECT_EQ(versions, (std::set<std::string>{"version_0", "version_1"})) << "no rank made its own";
  std::filesystem::remove_all(out);
}

TEST(Loomrun, RunsTheTrainMlpExample) {
  std::string loomrun = loomrun_path();
  std::string train = build_output("LOOM_TRAIN_MLP", "../examples/train_mlp");
  if (loomrun.empty() || train.empty())
    GTEST_SKIP() << "loomrun or examples/train_mlp is not built next to this test binary";
  char tmpl[] = "/tmp/loom_train_mlp_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string out = tmpl;
  Job job = run_job("unused", {}, 60s,
                    {loomrun, "--nproc-per-node", "2", "--grace-period", "1", train, "--epochs",
                     "2", "--hidden", "32", "--out", out});
  EXPECT_TRUE(job.ok()) << job.describe();
  // Rank 0 prints once, and the job it sees is loomrun's two processes.
  EXPECT_THAT(job.output, HasSubstr("world size 2"));
  EXPECT_EQ(job.output.find("accuracy"), job.output.rfind("accuracy")) << job.output;
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors"));
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace loom::ddptest
