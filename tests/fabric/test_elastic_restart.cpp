// Elastic restart end to end (docs/design.md "Elastic restart"): a DDP job on 2 ranks that
// checkpoints every few steps and resumes from latest_checkpoint() is killed (kill -9 of rank 1
// mid-step) under loomrun --max-restarts 1 and under Fabric's own launch with max_restarts = 1;
// it restarts, finishes, and its final parameters equal those of an uninterrupted run bit for
// bit. When the restarts run out, the launcher exits non-zero naming the rank. Timings of the
// kill, the restart and the end are printed (they are measured, never asserted).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "data/dataloader.h"
#include "data/distributed_sampler.h"
#include "fabric/fabric.h"
#include "fabric/latest_checkpoint.h"
#include "nn/nn.h"
#include "optim/adam.h"
#include "tensor/factories.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tests/fabric/ddp_harness.h"

namespace loom::ddptest {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr int kWorld = 2;
constexpr int64_t kRows = 64, kBatch = 4;
constexpr int64_t kStepsPerEpoch = kRows / kWorld / kBatch;  // 8
constexpr int64_t kEpochs = 3;
constexpr int64_t kSaveEvery = 5;

// Seconds since the epoch: ranks and the test share this clock.
double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A small training program: DDP on 2 ranks, a model with dropout (so the RNG state matters),
// AdamW (so the optimizer state does), shuffled data in a fixed order per epoch, a checkpoint
// every kSaveEvery steps, and a resume from the latest complete one at start. With
// LOOM_TEST_KILL_AT=s, rank 1 kills itself with SIGKILL in step s + 1, after its backward and
// before its optimizer step, on the first attempt only (every attempt with
// LOOM_TEST_KILL_ALWAYS=1). LOOM_TEST_MAX_RESTARTS sets FabricOptions::max_restarts.
LOOM_DDP_SCENARIO(elastic_train) {
  int attempt = job_env_int("LOOM_RESTART_COUNT", 0);
  Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = kWorld,
                 .max_restarts = job_env_int("LOOM_TEST_MAX_RESTARTS", 0)});
  fabric.launch();
  int r = fabric.global_rank();
  record(r, "start." + std::to_string(attempt), wall_time());
  fabric.seed_everything(42);
  auto model = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(8, 16), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Dropout>(0.25), std::make_shared<nn::Linear>(16, 4));
  auto optimizer = std::make_shared<optim::AdamW>(model->parameters(), 1e-2);
  auto [fm, opt] = fabric.setup(model, optimizer);
  Generator data_rng(7);
  Tensor x = empty({kRows, int64_t{8}}), y = empty({kRows, int64_t{4}});
  fill_normal(x, 0.0, 1.0, data_rng);
  fill_normal(y, 0.0, 1.0, data_rng);
  auto loader = fabric.setup_dataloaders(std::make_shared<data::DataLoader>(
      std::make_shared<data::TensorDataset>(std::vector<Tensor>{x, y}),
      data::DataLoaderOptions{.batch_size = kBatch, .shuffle = true, .seed = 3}));
  auto sampler = std::dynamic_pointer_cast<data::DistributedSampler>(loader->loader()->sampler());

  // What a checkpoint holds: the model, the optimizer, the steps done, and every rank's RNG
  // position (the seed is seed_everything's again; the offset is what the steps drew).
  std::string dir = job_dir() + "/ckpts";
  std::filesystem::create_directories(dir);
  CheckpointState state{{"model", model}, {"optimizer", optimizer}, {"step", int64_t{0}},
                        {"rng_offsets", zeros({kWorld}, DType::f64)}};
  int64_t step = 0;
  if (std::optional<std::string> path = latest_checkpoint(dir)) {
    fabric.load(*path, state);
    step = std::get<int64_t>(state["step"]);
    std::vector<double> offsets = std::get<Tensor>(state["rng_offsets"]).to_vector<double>();
    default_generator().set_offset(uint64_t(offsets.at(size_t(r))));
    record(r, "resumed_from", double(step));
    record(r, "resumed." + std::to_string(attempt), wall_time());
  }
  int kill_at = job_env_int("LOOM_TEST_KILL_AT", -1);
  bool kill_now = attempt == 0 || job_env_int("LOOM_TEST_KILL_ALWAYS", 0) == 1;
  for (int64_t epoch = step / kStepsPerEpoch; epoch < kEpochs; ++epoch) {
    // The data position is (epoch, step in epoch): the sampler's epoch fixes the order, and
    // the batches before the step are skipped.
    sampler->set_epoch(epoch);
    int64_t batch_index = 0;
    for (data::Batch& batch : *loader) {
      if (batch_index++ < step - epoch * kStepsPerEpoch) continue;
      Tensor loss = mse_loss((*fm)(batch[0]), batch[1]);
      fabric.backward(loss);
      if (r == 1 && step == kill_at && kill_now) {
        record(r, "killed", wall_time());
        ::raise(SIGKILL);  // the in-flight step is lost with this process
      }
      opt->step();
      opt->zero_grad();
      ++step;
      if (step % kSaveEvery == 0) {
        Tensor offset = scalar_tensor(double(default_generator().offset()), DType::f64);
        state["rng_offsets"] = fabric.all_gather(offset).reshape({kWorld});
        state["step"] = step;
        char name[64];
        std::snprintf(name, sizeof(name), "step-%06lld.safetensors", static_cast<long long>(step));
        fabric.save(dir + "/" + name, state);
      }
    }
  }
  record(r, "steps", double(step));
  record(r, "final", flat_state(*model));
  record(r, "end", wall_time());
}

std::string loomrun_path() { return build_output("LOOM_LOOMRUN", "../tools/loomrun"); }

std::vector<std::string> under_loomrun(const std::string& loomrun, int max_restarts) {
  return {loomrun, "--nproc-per-node", std::to_string(kWorld), "--grace-period", "1",
          "--max-restarts", std::to_string(max_restarts), self_exe(),
          "--gtest_filter=DdpChild.Run"};
}

// Both ranks finished every step with the same parameters; returns them.
std::vector<double> finished_parameters(const Job& job) {
  std::vector<double> zero = job.rank(0).values("final");
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(job.rank(r).value("steps"), double(kEpochs * kStepsPerEpoch)) << job.describe();
    EXPECT_EQ(job.rank(r).values("final"), zero) << "rank " << r << " differs from rank 0";
  }
  return zero;
}

// The restarted attempt resumed from the last checkpoint before the kill (the steps after it
// were lost and redone), and how long each phase took.
void expect_resumed_and_report(const Job& job, int kill_at, const char* how) {
  double killed = job.rank(1).value("killed");
  ASSERT_FALSE(std::isnan(killed)) << "rank 1 was not killed\n" << job.describe();
  for (int r = 0; r < kWorld; ++r)
    EXPECT_EQ(job.rank(r).value("resumed_from"), double(kill_at / kSaveEvery * kSaveEvery))
        << job.describe();
  double started = std::min(job.rank(0).value("start.1"), job.rank(1).value("start.1"));
  double resumed = std::max(job.rank(0).value("resumed.1"), job.rank(1).value("resumed.1"));
  double ended = std::max(job.rank(0).value("end"), job.rank(1).value("end"));
  std::printf("[ elastic ] %s: kill -9 of rank 1 -> new ranks running %.3f s, resumed from the "
              "checkpoint %.3f s, job finished %.3f s (a shared machine)\n",
              how, started - killed, resumed - killed, ended - killed);
}

class ElasticRestart : public ::testing::Test {
 protected:
  // The uninterrupted run under loomrun, the reference of every restarted run.
  static const std::vector<double>& reference() {
    static const std::vector<double> params = [] {
      Job job = run_job("elastic_train", {}, 40s, under_loomrun(loomrun_path(), 0));
      EXPECT_TRUE(job.ok()) << job.describe();
      EXPECT_FALSE(job.rank(0).has("resumed_from")) << "a fresh run has nothing to resume";
      return finished_parameters(job);
    }();
    return params;
  }
  void SetUp() override {
    if (loomrun_path().empty())
      GTEST_SKIP() << "loomrun is not built next to this test binary (set LOOM_LOOMRUN)";
  }
};

TEST_F(ElasticRestart, LoomrunRestartsAKilledRankAndTheJobEndsBitIdenticalToAnUninterruptedRun) {
  const std::vector<double>& expected = reference();
  ASSERT_FALSE(expected.empty());
  constexpr int kKillAt = 13;
  Job job = run_job("elastic_train", {{"LOOM_TEST_KILL_AT", std::to_string(kKillAt)}}, 40s,
                    under_loomrun(loomrun_path(), 1));
  ASSERT_TRUE(job.ok()) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("loomrun: rank 1 was killed by signal 9 (SIGKILL); stopped "
                                    "the other ranks; restarting all 2 ranks (restart 1 of 1, "
                                    "LOOM_RESTART_COUNT=1)"));
  expect_resumed_and_report(job, kKillAt, "loomrun --max-restarts 1");
  EXPECT_EQ(finished_parameters(job), expected) << "not bit-identical to the uninterrupted run";
}

TEST_F(ElasticRestart, FabricsOwnLaunchRestartsAKilledRankWithMaxRestarts) {
  const std::vector<double>& expected = reference();
  ASSERT_FALSE(expected.empty());
  constexpr int kKillAt = 7;
  Job job = run_job("elastic_train",
                    {{"LOOM_TEST_KILL_AT", std::to_string(kKillAt)}, {"LOOM_TEST_MAX_RESTARTS", "1"}});
  ASSERT_TRUE(job.ok()) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("loom ddp: rank 1 was killed by signal 9 (SIGKILL); stopped "
                                    "the other ranks; restarting all 2 ranks (restart 1 of 1, "
                                    "LOOM_RESTART_COUNT=1)"));
  expect_resumed_and_report(job, kKillAt, "Fabric max_restarts = 1");
  EXPECT_EQ(finished_parameters(job), expected) << "not bit-identical to the uninterrupted run";
}

TEST_F(ElasticRestart, FabricsLaunchGivesUpAfterMaxRestartsNamingTheRank) {
  Job job = run_job("elastic_train", {{"LOOM_TEST_KILL_AT", "2"},
                                      {"LOOM_TEST_KILL_ALWAYS", "1"},
                                      {"LOOM_TEST_MAX_RESTARTS", "1"}});
  EXPECT_FALSE(job.result.timed_out) << job.describe();
  ASSERT_FALSE(job.ok()) << job.describe();
  EXPECT_EQ(job.result.exit_code(), 128 + SIGKILL) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("loom ddp: rank 1 was killed by signal 9 (SIGKILL); stopped "
                                    "the other ranks; no restart left (max_restarts 1, all used)"));
  EXPECT_FALSE(job.rank(0).has("final")) << "no attempt finished";
}

TEST_F(ElasticRestart, LoomrunExitsNonZeroNamingTheRankWhenRestartsRunOut) {
  Job job = run_job("unused", {}, 30s,
                    {loomrun_path(), "--nproc-per-node", "2", "--grace-period", "1",
                     "--max-restarts", "2", "/bin/sh", "-c",
                     "echo attempt $LOOM_RESTART_COUNT; if [ \"$RANK\" = 1 ]; then exit 3; fi; "
                     "exec sleep 20"});
  EXPECT_FALSE(job.result.timed_out) << job.describe();
  EXPECT_EQ(job.result.exit_code(), 3) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("[rank 1] attempt 2"));  // three attempts
  EXPECT_THAT(job.output, HasSubstr("loomrun: rank 1 exited with status 3; stopped the other "
                                    "ranks; no restart left (--max-restarts 2, all used)"));
}

TEST(ElasticRestartOptions, MaxRestartsIsCheckedAtConstruction) {
  auto error_of = [](FabricOptions options) {
    try {
      Fabric fabric(std::move(options));
    } catch (const ValueError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error_of({.accelerator = "cpu", .strategy = "ddp", .devices = 2, .max_restarts = -1}),
              HasSubstr("max_restarts=-1 is invalid"));
  EXPECT_THAT(error_of({.accelerator = "cpu", .strategy = "ddp_spawn", .devices = 2,
                        .max_restarts = 1}),
              HasSubstr("strategy 'ddp_spawn' does not start its ranks that way"));
  EXPECT_THAT(error_of({.accelerator = "cpu", .devices = 1, .max_restarts = 1}),
              HasSubstr("loomrun --max-restarts"));
  EXPECT_EQ(error_of({.accelerator = "cpu", .strategy = "ddp", .devices = 2, .max_restarts = 3}),
            "");
}

}  // namespace
}  // namespace loom::ddptest
