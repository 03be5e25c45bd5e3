// The deepspeed strategy (ZeRO stages 1, 2 and 3) with 2 and 4 real processes (ddp_harness.h):
// AdamW training that must end where one process training on the union batch ends (several
// buckets, parameters straddling shard boundaries, a bias some rank owns none of), gradient
// accumulation with and without no_backward_sync, clip_gradients' norm, the optimizer state
// each rank keeps (1/W of one process's), reduce-scatters started during backward, checkpoints
// that continue identically (at the same world size, at another, and in one process), stage 3
// on the fsdp machinery, and the configuration errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "autograd/grad_mode.h"
#include "fabric/deepspeed.h"
#include "fabric/fabric.h"
#include "nn/linear.h"
#include "optim/adam.h"
#include "tensor/allocator.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tests/fabric/ddp_harness.h"
#include "tests/fabric/fabric_test_util.h"

namespace loom::ddptest {
namespace {

using fabric_test::value_error_of;

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// ---- the model, data and single-process reference ----

constexpr int64_t kIn = 6, kHidden = 20, kOut = 3;
constexpr int64_t kRows = 16;  // rows of one batch; divisible by 2 and 4 ranks
constexpr int64_t kNumel =
    kIn * kHidden + kHidden + kHidden * kHidden + kHidden + kHidden * kOut + kOut;  // 623
constexpr double kLr = 0.02, kWeightDecay = 0.05;

class Net : public nn::Module {
 public:
  Net() {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(kIn, kHidden));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(kHidden, kHidden));
    fc3 = register_module("fc3", std::make_shared<nn::Linear>(kHidden, kOut));
    shift = register_buffer("shift", randn({kOut}));
  }
  Tensor forward(const Tensor& x) override {
    return (*fc3)((*fc2)((*fc1)(x).tanh()).tanh()) + shift;
  }
  std::string name() const override { return "Net"; }
  std::shared_ptr<nn::Linear> fc1, fc2, fc3;
  Tensor shift;
};

std::pair<Tensor, Tensor> full_batch(int step, int micro) {
  Generator g(7000 + 10 * uint64_t(step) + uint64_t(micro));
  Tensor x = empty({kRows, kIn});
  Tensor y = empty({kRows, kOut});
  fill_normal(x, 0.0, 1.0, g);
  fill_normal(y, 0.0, 1.0, g);
  return {x, y};
}

std::shared_ptr<optim::AdamW> make_adamw(const nn::Module& m) {
  return std::make_shared<optim::AdamW>(m.parameters(), kLr,
                                        optim::AdamWOptions{.weight_decay = kWeightDecay});
}

// Fabric::clip_gradients' arithmetic on one process: the 2-norm in f64, then the scale.
double clip_by_norm(const nn::Module& m, double max_norm) {
  NoGradGuard no_grad;
  double total = 0;
  for (const Tensor& p : m.parameters())
    if (p.grad().defined())
      for (double v : p.grad().to_vector<double>()) total += v * v;
  total = std::sqrt(total);
  double coef = max_norm / (total + 1e-6);
  if (coef < 1.0)
    for (const Tensor& p : m.parameters())
      if (p.grad().defined()) Tensor(p.grad()).mul_(coef);
  return total;
}

struct Reference {
  std::vector<double> final;
  std::vector<double> norms;
  int64_t state_bytes = 0;  // after the first step
};

// One process, the whole batch, the mean loss: what every ZeRO rank must reproduce. `model`
// and `opt` may come loaded from a checkpoint (then `first_step` continues its steps).
// `precision` other than 32-true: forward through a one-device Fabric's FabricModule of it.
Reference train_reference(Net& model, optim::AdamW& opt, int first_step, int steps, int accumulate,
                          double clip, const std::string& precision = "32-true") {
  Reference ref;
  Fabric one({.accelerator = "cpu", .devices = 1, .precision = precision});
  std::shared_ptr<FabricModule> wrapped =
      one.setup(std::shared_ptr<nn::Module>(&model, [](nn::Module*) {}));
  for (int s = first_step; s < first_step + steps; ++s) {
    for (int m = 0; m < accumulate; ++m) {
      auto [x, y] = full_batch(s, m);
      (mse_loss((*wrapped)(x), y) / double(accumulate)).backward();
    }
    if (clip > 0) ref.norms.push_back(clip_by_norm(model, clip));
    opt.step();
    opt.zero_grad();
    if (s == first_step)
      for (const Tensor& p : model.parameters())
        if (const optim::ParamState* st = opt.state(p))
          for (const auto& [key, buf] : st->buffers) ref.state_bytes += int64_t(buf.nbytes());
  }
  ref.final = flat_state(model);
  return ref;
}

Reference reference_from(const std::vector<double>& init, int steps, int accumulate, double clip,
                         const std::string& precision = "32-true") {
  Net model;
  load_flat_state(model, init);
  auto opt = make_adamw(model);
  return train_reference(model, *opt, 0, steps, accumulate, clip, precision);
}

std::shared_ptr<DeepSpeedStrategy> deepspeed(int stage, double bucket_mb = 25.0,
                                             bool offload = false) {
  return std::make_shared<DeepSpeedStrategy>(DeepSpeedOptions{.stage = stage,
                                                              .offload_optimizer = offload,
                                                              .reduce_bucket_mb = bucket_mb,
                                                              .allgather_bucket_mb = bucket_mb,
                                                              .timeout = 10s});
}

ZeroOptimizer& zero_of(const FabricOptimizer& fo) {
  return dynamic_cast<ZeroOptimizer&>(*fo.optimizer());
}
ZeroPartition& partition_of(FabricModule& fm) { return unwrap<ZeroDataParallel>(&fm)->partition(); }

// ---- training ----

// Each rank trains on its rows of every batch. LOOM_DS_* select the world size, stage, bucket
// size, steps, accumulation (under no_backward_sync unless SYNC_EACH), clipping and zero_grad.
LOOM_DDP_SCENARIO(ds_train) {
  int world = job_env_int("LOOM_DS_WORLD", 2);
  int stage = job_env_int("LOOM_DS_STAGE", 2);
  int steps = job_env_int("LOOM_DS_STEPS", 3);
  int accumulate = job_env_int("LOOM_DS_ACCUMULATE", 1);
  bool sync_each = job_env_int("LOOM_DS_SYNC_EACH", 0) == 1;
  bool zero_to_none = job_env_int("LOOM_DS_ZERO_TO_NONE", 1) == 1;
  double clip = job_env_double("LOOM_DS_CLIP", 0.0);
  bool offload = job_env_int("LOOM_DS_OFFLOAD", 0) == 1;
  Fabric fabric({.accelerator = "cpu",
                 .strategy = deepspeed(stage, job_env_double("LOOM_DS_BUCKET_MB", 25.0), offload),
                 .devices = world,
                 .precision = job_env("LOOM_DS_PRECISION", "32-true")});
  fabric.launch();
  int r = fabric.global_rank();
  fabric.seed_everything(1234);  // a different init on every rank until set-up broadcasts
  auto model = std::make_shared<Net>();
  record(r, "init_local", flat_state(*model));
  auto opt = make_adamw(*model);
  auto [fm, fo] = fabric.setup(model, opt);
  record(r, "init", flat_state(*model));
  ZeroPartition& partition = partition_of(*fm);
  record(r, "buckets", double(partition.num_buckets()));
  int64_t per = kRows / world;
  std::vector<double> norms;
  try {
    for (int s = 0; s < steps; ++s) {
      for (int m = 0; m < accumulate; ++m) {
        auto [x, y] = full_batch(s, m);
        Tensor xr = x.narrow(0, r * per, per).contiguous();
        Tensor yr = y.narrow(0, r * per, per).contiguous();
        bool last = m + 1 == accumulate;
        auto no_sync = fabric.no_backward_sync(*fm, /*enabled=*/!last && !sync_each);
        fabric.backward(mse_loss((*fm)(xr), yr) / double(accumulate));
      }
      if (s == 0) {  // the gradient elements this rank holds after a synchronised backward
        double held = 0;
        for (const Tensor& p : model->parameters())
          if (p.grad().defined()) held += double(p.grad().numel());
        record(r, "grad_numel", held);
      }
      if (clip > 0) norms.push_back(fabric.clip_gradients(*fm, *fo, clip).item<double>());
      int64_t before = memory_stats().current_bytes;
      fo->step();
      if (s == 0) record(r, "step_alloc_bytes", double(memory_stats().current_bytes - before));
      fo->zero_grad(zero_to_none);
    }
    record(r, "final", flat_state(*model));
    record(r, "norms", norms);
    record(r, "state_bytes", double(zero_of(*fo).state_bytes()));
    optim::OptimizerStateDict local = fo->state_dict();
    double elements = 0;
    for (const auto& [index, st] : local.state)
      elements += double(st.buffers.at("exp_avg").numel());
    record(r, "state_dict_elements", elements);
  } catch (const std::exception& e) {
    record_text(r, "error", e.what());
  }
  record(r, "launched",
         {double(partition.stats().buckets_launched_during_backward),
          double(partition.stats().buckets_launched_at_finalize)});
  fabric.barrier();
  record(r, "done", 1.0);
}

struct TrainCase {
  int world = 2;
  int stage = 2;
  int steps = 3;
  int accumulate = 1;
  bool sync_each = false;
  bool zero_to_none = true;
  double bucket_mb = 25.0;
  double clip = 0.0;
  bool offload = false;
  std::string precision = "32-true";
};

Job run_training(const TrainCase& c) {
  return run_job("ds_train", {{"LOOM_DS_WORLD", std::to_string(c.world)},
                              {"LOOM_DS_STAGE", std::to_string(c.stage)},
                              {"LOOM_DS_STEPS", std::to_string(c.steps)},
                              {"LOOM_DS_ACCUMULATE", std::to_string(c.accumulate)},
                              {"LOOM_DS_SYNC_EACH", c.sync_each ? "1" : "0"},
                              {"LOOM_DS_ZERO_TO_NONE", c.zero_to_none ? "1" : "0"},
                              {"LOOM_DS_BUCKET_MB", std::to_string(c.bucket_mb)},
                              {"LOOM_DS_CLIP", std::to_string(c.clip)},
                              {"LOOM_DS_OFFLOAD", c.offload ? "1" : "0"},
                              {"LOOM_DS_PRECISION", c.precision}});
}

// Every rank ends where one process training on the union batch ends, from rank 0's start.
Reference expect_matches_reference(const TrainCase& c, const Job& job) {
  EXPECT_TRUE(job.ok()) << job.describe();
  RankRecord zero = job.rank(0);
  std::vector<double> init = zero.values("init_local");
  EXPECT_EQ(init.size(), size_t(kNumel + kOut)) << job.describe();
  if (init.size() != size_t(kNumel + kOut)) return {};
  Reference ref = reference_from(init, c.steps, c.accumulate, c.clip, c.precision);
  EXPECT_GT(max_abs_diff(ref.final, init), 1e-2) << "the reference must actually train";
  std::vector<double> final0 = zero.values("final");
  for (int r = 0; r < c.world; ++r) {
    EXPECT_EQ(job.rank(r).values("final"), final0)
        << "the ranks hold identical parameters, rank " << r;
    RankRecord rec = job.rank(r);
    EXPECT_EQ(rec.value("done"), 1.0) << job.describe();
    EXPECT_EQ(rec.text("error"), "") << "rank " << r;
    if (r > 0) {  // seeded differently, so different until set-up broadcasts rank 0's state
      EXPECT_GT(max_abs_diff(rec.values("init_local"), init), 1e-3) << "rank " << r;
    }
    EXPECT_EQ(max_abs_diff(rec.values("init"), init), 0.0) << "rank " << r;
    // bf16-mixed: a rank's weight gradients are bf16 GEMMs over its half of the rows, rounded
    // to bf16 before they are averaged, which one process's GEMM over all rows is not.
    double tolerance = c.precision == "bf16-mixed" ? 1e-3 : 1e-5;
    EXPECT_LT(max_abs_diff(rec.values("final"), ref.final), tolerance) << "rank " << r;
    if (c.clip > 0) {
      EXPECT_GT(ref.norms.front(), c.clip) << "the clip must bite";
      std::vector<double> norms = rec.values("norms");
      EXPECT_EQ(norms.size(), ref.norms.size()) << "rank " << r;
      for (size_t i = 0; i < norms.size() && i < ref.norms.size(); ++i)
        EXPECT_NEAR(norms[i], ref.norms[i], 1e-5 * ref.norms[i]) << "rank " << r << " step " << i;
    }
  }
  return ref;
}

// The optimizer state of the ranks adds up to one process's exactly (every element's state
// is kept once) and each rank holds ~1/W of it: at most ceil(n / W) elements per bucket of n.
void expect_partitioned_state(const TrainCase& c, const Job& job, const Reference& ref) {
  ASSERT_GT(ref.state_bytes, 0);
  EXPECT_EQ(ref.state_bytes, 2 * kNumel * 4) << "AdamW: exp_avg and exp_avg_sq in f32";
  double sum = 0, sum_elements = 0;
  double buckets = job.rank(0).value("buckets");
  double bound = double(ref.state_bytes) / c.world + 2 * 4 * buckets;  // + rounding per bucket
  for (int r = 0; r < c.world; ++r) {
    RankRecord rec = job.rank(r);
    double bytes = rec.value("state_bytes");
    sum += bytes;
    sum_elements += rec.value("state_dict_elements");
    EXPECT_LE(bytes, bound) << "rank " << r << " of " << c.world;
    // The allocator agrees: the first step allocated this rank's state and nothing else
    // that outlives the step.
    EXPECT_EQ(rec.value("step_alloc_bytes"), bytes) << "rank " << r;
    std::printf(
        "[ state ] stage %d, %d ranks, rank %d: %.0f bytes of optimizer state "
        "(one process: %lld, 1/W: %.1f)\n",
        c.stage, c.world, r, bytes, (long long)ref.state_bytes, double(ref.state_bytes) / c.world);
  }
  EXPECT_EQ(sum, double(ref.state_bytes));
  EXPECT_EQ(sum_elements, double(kNumel)) << "the local state dicts partition the parameters";
}

// Stage 2: after backward a rank holds its shard's gradient, presented on the parameters (a
// parameter crossing the shard's edge with its full shape, zero outside the owned range), so
// less than ddp's every gradient; together the ranks cover every element.
void expect_partitioned_gradients(const TrainCase& c, const Job& job) {
  double sum = 0;
  for (int r = 0; r < c.world; ++r) {
    double held = job.rank(r).value("grad_numel");
    sum += held;
    EXPECT_LT(held, double(kNumel)) << "rank " << r;
    std::printf(
        "[ grads ] stage 2, %d ranks, rank %d holds %.0f gradient elements after "
        "backward (ddp: %lld)\n",
        c.world, r, held, (long long)kNumel);
  }
  EXPECT_GE(sum, double(kNumel));
}

TEST(DeepSpeedTraining, Stage1TwoRanksMatchOneProcessOnTheUnionBatch) {
  TrainCase c{.world = 2, .stage = 1};
  Job job = run_training(c);
  Reference ref = expect_matches_reference(c, job);
  expect_partitioned_state(c, job, ref);
  for (int r = 0; r < 2; ++r)  // stage 1 keeps every gradient on every rank, as ddp does
    EXPECT_EQ(job.rank(r).value("grad_numel"), double(kNumel)) << "rank " << r;
}

TEST(DeepSpeedTraining, Stage2TwoRanksMatchOneProcessOnTheUnionBatch) {
  TrainCase c{.world = 2, .stage = 2};
  Job job = run_training(c);
  Reference ref = expect_matches_reference(c, job);
  expect_partitioned_state(c, job, ref);
  expect_partitioned_gradients(c, job);
}

TEST(DeepSpeedTraining, OneRankIsOneProcess) {
  for (int stage : {1, 2}) {
    TrainCase c{.world = 1, .stage = stage, .clip = 0.05};
    Job job = run_training(c);
    Reference ref = expect_matches_reference(c, job);
    expect_partitioned_state(c, job, ref);
  }
}

TEST(DeepSpeedTraining, Stage1FourRanksWithSeveralBucketsMatchOneProcess) {
  // ~10-byte buckets: one per parameter; fc3's 3-element bias leaves rank 3 without a part.
  TrainCase c{.world = 4, .stage = 1, .bucket_mb = 1e-5};
  Job job = run_training(c);
  Reference ref = expect_matches_reference(c, job);
  EXPECT_EQ(job.rank(0).value("buckets"), 6.0);
  expect_partitioned_state(c, job, ref);
}

TEST(DeepSpeedTraining, Stage2FourRanksMatchOneProcess) {
  TrainCase c{.world = 4, .stage = 2};
  Job job = run_training(c);
  Reference ref = expect_matches_reference(c, job);
  expect_partitioned_state(c, job, ref);
  expect_partitioned_gradients(c, job);
}

TEST(DeepSpeedTraining, Stage2FourRanksWithSeveralBucketsReduceScatterDuringBackward) {
  TrainCase c{.world = 4, .stage = 2, .steps = 2, .bucket_mb = 1e-5};
  Job job = run_training(c);
  Reference ref = expect_matches_reference(c, job);
  expect_partitioned_state(c, job, ref);
  for (int r = 0; r < 4; ++r) {
    std::vector<double> launched = job.rank(r).values("launched");
    ASSERT_EQ(launched.size(), 2u);
    EXPECT_EQ(launched[0] + launched[1], 12.0) << "6 buckets x 2 steps";
    EXPECT_EQ(launched[0], 12.0) << "every bucket launched from a gradient hook, rank " << r;
  }
}

TEST(DeepSpeedAccumulation, NoBackwardSyncStage1) {
  TrainCase c{.world = 2, .stage = 1, .steps = 2, .accumulate = 3};
  expect_matches_reference(c, run_training(c));
}

TEST(DeepSpeedAccumulation, NoBackwardSyncStage2FourRanksSeveralBuckets) {
  TrainCase c{.world = 4, .stage = 2, .steps = 2, .accumulate = 3, .bucket_mb = 1e-5};
  Job job = run_training(c);
  expect_matches_reference(c, job);
  std::vector<double> launched = job.rank(0).values("launched");
  ASSERT_EQ(launched.size(), 2u);
  EXPECT_EQ(launched[0] + launched[1], 12.0) << "only the last backward of a step reduces";
}

TEST(DeepSpeedAccumulation, Stage2SynchronisedBackwardsAddToThePartitionGradient) {
  // Every micro-batch reduce-scatters; the partition gradient of the first must not be
  // averaged again by the second.
  TrainCase c{.world = 2, .stage = 2, .steps = 2, .accumulate = 3, .sync_each = true};
  expect_matches_reference(c, run_training(c));
}

TEST(DeepSpeedAccumulation, Stage2GradientsZeroedInPlace) {
  TrainCase c{.world = 2,
              .stage = 2,
              .steps = 3,
              .accumulate = 2,
              .sync_each = true,
              .zero_to_none = false,
              .bucket_mb = 1e-5};
  expect_matches_reference(c, run_training(c));
}

TEST(DeepSpeedClipping, Stage1NormEqualsOneProcessAndClippedTrainingMatches) {
  TrainCase c{.world = 2, .stage = 1, .clip = 0.05};
  expect_matches_reference(c, run_training(c));
}

TEST(DeepSpeedClipping, Stage2NormSumsThePartitionsFourRanks) {
  TrainCase c{.world = 4, .stage = 2, .bucket_mb = 1e-5, .clip = 0.05};
  expect_matches_reference(c, run_training(c));
}

TEST(DeepSpeedPrecision, Stage2Bf16MixedMatchesOneProcessOfTheSamePrecision) {
  TrainCase c{.world = 2, .stage = 2, .bucket_mb = 1e-5, .precision = "bf16-mixed"};
  expect_matches_reference(c, run_training(c));
}

TEST(DeepSpeedOffload, OffloadOptimizerIsANoOpOnTheCpuThatRankZeroReportsOnce) {
  TrainCase c{.world = 2, .stage = 2, .steps = 1, .offload = true};
  Job job = run_training(c);
  expect_matches_reference(c, job);
  const std::string line = "offload_optimizer=true has no effect on a CPU run";
  size_t first = job.output.find(line);
  EXPECT_NE(first, std::string::npos) << job.describe();
  EXPECT_EQ(job.output.find(line, first + 1), std::string::npos) << "one line, rank 0 only";
}

// ---- checkpoints ----

// Trains 2 steps, saves, trains 2 more ("continued"); then scrambles the model (the
// optimizer's state is 2 steps ahead of the file's), loads the file into the model and the
// user's own optimizer object, and trains the same 2 steps again ("resumed"). With
// LOOM_DS_LOAD set, only loads that file and trains the 2 steps after it.
LOOM_DDP_SCENARIO(ds_checkpoint) {
  int world = job_env_int("LOOM_DS_WORLD", 2);
  int stage = job_env_int("LOOM_DS_STAGE", 2);
  std::string load_only = job_env("LOOM_DS_LOAD");
  Fabric fabric({.accelerator = "cpu", .strategy = deepspeed(stage, 1e-5), .devices = world});
  fabric.launch();
  int r = fabric.global_rank();
  fabric.seed_everything(99);
  auto model = std::make_shared<Net>();
  auto opt = make_adamw(*model);
  auto [fm, fo] = fabric.setup(model, opt);
  int64_t per = kRows / world;
  auto train = [&](int first, int steps) {
    for (int s = first; s < first + steps; ++s) {
      auto [x, y] = full_batch(s, 0);
      fabric.backward(mse_loss((*fm)(x.narrow(0, r * per, per).contiguous()),
                               y.narrow(0, r * per, per).contiguous()));
      fo->step();
      fo->zero_grad();
    }
  };
  try {
    std::string path = job_dir() + "/zero.safetensors";
    if (load_only.empty()) {
      record(r, "init", flat_state(*model));
      train(0, 2);
      fabric.save(path, {{"model", model}, {"optimizer", fo}, {"step", int64_t(2)}});
      train(2, 2);
      record(r, "continued", flat_state(*model));
    } else {
      path = load_only;
    }
    {
      NoGradGuard no_grad;
      for (const Tensor& p : model->parameters()) native::fill_(p, 0.5 + r);
    }
    // The user's own optimizer object loads too (through its ZeroOptimizer).
    CheckpointState state{{"model", model}, {"optimizer", opt}, {"step", int64_t(0)}};
    fabric.load(path, state);
    record(r, "step", double(std::get<int64_t>(state.at("step"))));
    train(2, 2);
    record(r, "resumed", flat_state(*model));
  } catch (const std::exception& e) {
    record_text(r, "error", e.what());
  }
  fabric.barrier();
  record(r, "done", 1.0);
}

Job run_checkpoint(int world, int stage, const std::string& load = "") {
  dist::EnvMap env{{"LOOM_DS_WORLD", std::to_string(world)},
                   {"LOOM_DS_STAGE", std::to_string(stage)}};
  if (!load.empty()) env["LOOM_DS_LOAD"] = load;
  return run_job("ds_checkpoint", env);
}

// The file holds the full optimizer state in one process's layout: a single process loads it
// and continues to where the ranks continued.
void expect_single_process_continues(const std::string& path,
                                     const std::vector<double>& continued) {
  Net model;
  auto opt = make_adamw(model);
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(&model, [](nn::Module*) {})},
                        {"optimizer", std::shared_ptr<optim::Optimizer>(opt)},
                        {"step", int64_t(0)}};
  load_checkpoint(path, state);
  EXPECT_EQ(std::get<int64_t>(state.at("step")), 2);
  for (const Tensor& p : model.parameters()) {
    const optim::ParamState* st = opt->state(p);
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->step, 2);
    EXPECT_EQ(st->buffers.at("exp_avg").sizes(), p.sizes());
  }
  Reference ref = train_reference(model, *opt, 2, 2, 1, 0.0);
  EXPECT_LT(max_abs_diff(ref.final, continued), 1e-5);
}

void expect_checkpoint_round_trip(int stage) {
  Job job = run_checkpoint(2, stage);
  ASSERT_TRUE(job.ok()) << job.describe();
  std::vector<double> continued = job.rank(0).values("continued");
  ASSERT_EQ(continued.size(), size_t(kNumel + kOut)) << job.describe();
  for (int r = 0; r < 2; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    EXPECT_EQ(rec.text("error"), "") << "rank " << r;
    EXPECT_EQ(rec.values("continued"), continued) << "rank " << r;
    EXPECT_EQ(rec.values("resumed"), continued) << "bit for bit, rank " << r;
    EXPECT_EQ(rec.value("step"), 2.0);
  }
  std::string path = job.dir + "/zero.safetensors";
  expect_single_process_continues(path, continued);
  // The same file on 4 ranks: each takes its own ranges of the full state.
  Job four = run_checkpoint(4, stage, path);
  ASSERT_TRUE(four.ok()) << four.describe();
  for (int r = 0; r < 4; ++r) {
    RankRecord rec = four.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << four.describe();
    EXPECT_EQ(rec.text("error"), "") << "rank " << r;
    EXPECT_LT(max_abs_diff(rec.values("resumed"), continued), 1e-5) << "rank " << r;
  }
}

TEST(DeepSpeedCheckpoint, Stage1SaveLoadContinuesIdenticallyAndLoadsAtAnotherWorldSize) {
  expect_checkpoint_round_trip(1);
}

TEST(DeepSpeedCheckpoint, Stage2SaveLoadContinuesIdenticallyAndLoadsAtAnotherWorldSize) {
  expect_checkpoint_round_trip(2);
}

// ---- unused parameters ----

// Net plus a layer its forward never uses.
class NetWithSpare : public Net {
 public:
  NetWithSpare() { spare = register_module("spare", std::make_shared<nn::Linear>(kOut, kOut)); }
  std::shared_ptr<nn::Linear> spare;
};

LOOM_DDP_SCENARIO(ds_unused) {
  int stage = job_env_int("LOOM_DS_STAGE", 2);
  bool find_unused = job_env_int("LOOM_DS_FIND_UNUSED", 0) == 1;
  Fabric fabric({.accelerator = "cpu",
                 .strategy = std::make_shared<DeepSpeedStrategy>(
                     DeepSpeedOptions{.stage = stage,
                                      .reduce_bucket_mb = 1e-5,
                                      .find_unused_parameters = find_unused,
                                      .timeout = 10s}),
                 .devices = 2});
  fabric.launch();
  int r = fabric.global_rank();
  auto model = std::make_shared<NetWithSpare>();
  auto [fm, fo] = fabric.setup(model, make_adamw(*model));
  try {
    for (int s = 0; s < 2; ++s) {
      auto [x, y] = full_batch(s, 0);
      fabric.backward(
          mse_loss((*fm)(x.narrow(0, r * 8, 8).contiguous()), y.narrow(0, r * 8, 8).contiguous()));
      fo->step();
      fo->zero_grad();
    }
    record(r, "final", flat_state(*model));
  } catch (const std::exception& e) {
    record_text(r, "error", e.what());
  }
  fabric.barrier();  // no rank is left waiting in a collective
  record(r, "done", 1.0);
}

void expect_unused(int stage) {
  Job refused = run_job("ds_unused", {{"LOOM_DS_STAGE", std::to_string(stage)}}, 30s);
  ASSERT_TRUE(refused.ok()) << refused.describe();
  for (int r = 0; r < 2; ++r) {
    RankRecord rec = refused.rank(r);
    EXPECT_EQ(rec.value("done"), 1.0) << refused.describe();
    EXPECT_FALSE(rec.has("final"));
    EXPECT_THAT(rec.text("error"), HasSubstr("spare.weight")) << "rank " << r;
    EXPECT_THAT(rec.text("error"), HasSubstr("spare.bias")) << "rank " << r;
    EXPECT_THAT(rec.text("error"), HasSubstr("find_unused_parameters=true"));
    EXPECT_THAT(rec.text("error"), ::testing::Not(HasSubstr("fc1")));
  }
  Job allowed = run_job(
      "ds_unused", {{"LOOM_DS_STAGE", std::to_string(stage)}, {"LOOM_DS_FIND_UNUSED", "1"}}, 30s);
  ASSERT_TRUE(allowed.ok()) << allowed.describe();
  std::vector<double> final0 = allowed.rank(0).values("final");
  EXPECT_EQ(final0.size(), size_t(kNumel + kOut * kOut + kOut + kOut)) << allowed.describe();
  EXPECT_EQ(allowed.rank(1).values("final"), final0) << "the ranks stay identical";
  EXPECT_EQ(allowed.rank(0).text("error"), "");
}

TEST(DeepSpeedUnused, Stage1UnusedParametersFailEveryRankNamingThemOrCountAsZero) {
  expect_unused(1);
}
TEST(DeepSpeedUnused, Stage2UnusedParametersFailEveryRankNamingThemOrCountAsZero) {
  expect_unused(2);
}

// ---- stage 3 (fsdp's machinery) ----

// Built on meta under init_module(), set up as fsdp sets it up (a unit per Linear here), the
// optimizer built over the shards after setup_module().
LOOM_DDP_SCENARIO(ds_stage3) {
  int world = job_env_int("LOOM_DS_WORLD", 2);
  int steps = job_env_int("LOOM_DS_STEPS", 3);
  int accumulate = job_env_int("LOOM_DS_ACCUMULATE", 1);
  double clip = job_env_double("LOOM_DS_CLIP", 0.0);
  auto strategy = std::make_shared<DeepSpeedStrategy>(
      DeepSpeedOptions{.stage = 3, .timeout = 10s, .stage3_min_num_params = 50});
  Fabric fabric({.accelerator = "cpu", .strategy = strategy, .devices = world});
  fabric.launch();
  int r = fabric.global_rank();
  fabric.seed_everything(4321);
  std::shared_ptr<Net> model;
  {
    auto ctx = fabric.init_module();
    model = std::make_shared<Net>();
  }
  record(r, "built_on_meta", model->fc2->weight.is_meta() ? 1.0 : 0.0);
  try {  // an optimizer over the original parameters is refused, as under fsdp
    fabric.setup(std::make_shared<Net>(), make_adamw(*model));
    record_text(r, "setup_refusal", "none");
  } catch (const RuntimeError& e) {
    record_text(r, "setup_refusal", e.what());
  }
  auto fm = fabric.setup_module(model);
  record(r, "units",
         double(dynamic_cast<FullyShardedModule&>(*fm->forward_module()).units().size()));
  // The gathered full state, in Net's order (a plain Net takes it by name).
  auto gathered = [&] {
    Net plain;
    plain.load_state_dict(fm->state_dict());
    return flat_state(plain);
  };
  record(r, "init", gathered());
  auto fo = fabric.setup_optimizers(std::make_shared<optim::AdamW>(
      fm->parameters(), kLr, optim::AdamWOptions{.weight_decay = kWeightDecay}));
  int64_t per = kRows / world;
  std::vector<double> norms;
  try {
    for (int s = 0; s < steps; ++s) {
      for (int m = 0; m < accumulate; ++m) {
        auto [x, y] = full_batch(s, m);
        bool last = m + 1 == accumulate;
        auto no_sync = fabric.no_backward_sync(*fm, /*enabled=*/!last);
        fabric.backward(mse_loss((*fm)(x.narrow(0, r * per, per).contiguous()),
                                 y.narrow(0, r * per, per).contiguous()) /
                        double(accumulate));
      }
      if (clip > 0) norms.push_back(fabric.clip_gradients(*fm, *fo, clip).item<double>());
      fo->step();
      fo->zero_grad();
    }
    record(r, "final", gathered());
    record(r, "norms", norms);
    double bytes = 0;
    for (const auto& [index, st] : fo->state_dict().state)
      for (const auto& [key, buf] : st.buffers) bytes += double(buf.nbytes());
    record(r, "state_bytes", bytes);
    try {
      fabric.save(job_dir() + "/stage3.safetensors", {{"model", model}, {"optimizer", fo}});
      record_text(r, "save_refusal", "none");
    } catch (const ValueError& e) {
      record_text(r, "save_refusal", e.what());
    }
  } catch (const std::exception& e) {
    record_text(r, "error", e.what());
  }
  fabric.barrier();
  record(r, "done", 1.0);
}

void expect_stage3_matches(int world, int accumulate, double clip) {
  const int steps = 3;
  Job job = run_job("ds_stage3", {{"LOOM_DS_WORLD", std::to_string(world)},
                                  {"LOOM_DS_STEPS", std::to_string(steps)},
                                  {"LOOM_DS_ACCUMULATE", std::to_string(accumulate)},
                                  {"LOOM_DS_CLIP", std::to_string(clip)}});
  ASSERT_TRUE(job.ok()) << job.describe();
  std::vector<double> init = job.rank(0).values("init");
  ASSERT_EQ(init.size(), size_t(kNumel + kOut)) << job.describe();
  Reference ref = reference_from(init, steps, accumulate, clip);
  EXPECT_GT(max_abs_diff(ref.final, init), 1e-2) << "the reference must actually train";
  for (int r = 0; r < world; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    EXPECT_EQ(rec.text("error"), "") << "rank " << r;
    EXPECT_EQ(rec.value("built_on_meta"), 1.0);
    EXPECT_THAT(rec.text("setup_refusal"), HasSubstr("Call fabric.setup_module(model) first"));
    EXPECT_EQ(rec.value("units"), 4.0) << "fc1, fc2, fc3 and the root";
    EXPECT_EQ(rec.values("init"), init) << "rank " << r;
    EXPECT_LT(max_abs_diff(rec.values("final"), ref.final), 1e-5) << "rank " << r;
    // Each rank's state: its padded shard of every unit, 1/W of one process's and a little.
    EXPECT_LE(rec.value("state_bytes"), double(2 * 4 * kNumel) / world + 2 * 4 * 4 * world)
        << "rank " << r;
    EXPECT_THAT(rec.text("save_refusal"),
                HasSubstr("under deepspeed stage 3, saving optimizer state ('optimizer') is not "
                          "yet available"));
    if (clip > 0) {
      EXPECT_GT(ref.norms.front(), clip) << "the clip must bite";
      std::vector<double> norms = rec.values("norms");
      ASSERT_EQ(norms.size(), ref.norms.size()) << "rank " << r;
      for (size_t i = 0; i < norms.size(); ++i)
        EXPECT_NEAR(norms[i], ref.norms[i], 1e-5 * ref.norms[i]) << "rank " << r << " step " << i;
    }
  }
}

TEST(DeepSpeedStage3, TwoRanksMatchOneProcessOnTheUnionBatch) { expect_stage3_matches(2, 1, 0.0); }

TEST(DeepSpeedStage3, FourRanksWithAccumulationAndClippingMatchOneProcess) {
  expect_stage3_matches(4, 2, 0.05);
}

// ---- configuration ----

TEST(DeepSpeedConfig, StagesOtherThanOneTwoAndThreeAreValueErrorsListingTheValidOnes) {
  for (int stage : {0, 4, -1}) {
    std::string msg = value_error_of([&] { DeepSpeedStrategy s({.stage = stage}); });
    EXPECT_THAT(msg, HasSubstr("stage=" + std::to_string(stage) + " is invalid")) << stage;
    EXPECT_THAT(msg, HasSubstr("valid stages: 1 (optimizer state partitioned), 2 (optimizer "
                               "state and gradients partitioned), 3 (parameters partitioned too)"));
  }
  EXPECT_THAT(value_error_of([] { DeepSpeedStrategy s({.reduce_bucket_mb = 0}); }),
              HasSubstr("reduce_bucket_mb=0 is invalid; it must be > 0"));
  EXPECT_THAT(value_error_of([] { DeepSpeedStrategy s({.allgather_bucket_mb = -1}); }),
              HasSubstr("allgather_bucket_mb=-1 is invalid"));
  EXPECT_THAT(
      value_error_of([] { Fabric f({.accelerator = "cpu", .strategy = "deepspeed_stage_9"}); }),
      HasSubstr("the deepspeed strategies are deepspeed (stage 2), deepspeed_stage_1, "
                "deepspeed_stage_2, deepspeed_stage_2_offload, deepspeed_stage_3, "
                "deepspeed_stage_3_offload"));
}

TEST(DeepSpeedConfig, ReachableByNameAndAsAPluginObject) {
  Fabric by_name({.accelerator = "cpu", .strategy = "deepspeed", .devices = 2});
  EXPECT_EQ(by_name.strategy().name(), "deepspeed");
  auto* ds = dynamic_cast<DeepSpeedStrategy*>(&by_name.strategy());
  ASSERT_NE(ds, nullptr);
  EXPECT_EQ(ds->stage(), 2) << "stage 2 by default";
  Fabric stage1({.accelerator = "cpu", .strategy = "deepspeed_stage_1", .devices = 2});
  EXPECT_EQ(dynamic_cast<DeepSpeedStrategy&>(stage1.strategy()).stage(), 1);
  Fabric offload({.accelerator = "cpu", .strategy = "deepspeed_stage_2_offload", .devices = 2});
  EXPECT_TRUE(
      dynamic_cast<DeepSpeedStrategy&>(offload.strategy()).deepspeed_options().offload_optimizer);
  Fabric stage3({.accelerator = "cpu", .strategy = "deepspeed_stage_3", .devices = 2});
  EXPECT_EQ(dynamic_cast<DeepSpeedStrategy&>(stage3.strategy()).stage(), 3);
  EXPECT_TRUE(stage3.strategy().optimizer_needs_setup_module_first());
  EXPECT_FALSE(stage1.strategy().optimizer_needs_setup_module_first());
  auto object = std::make_shared<DeepSpeedStrategy>(DeepSpeedOptions{.stage = 1});
  Fabric plugin({.accelerator = "cpu", .devices = 2, .plugins = {object}});
  EXPECT_EQ(&plugin.strategy(), object.get());
  Fabric as_strategy({.accelerator = "cpu", .strategy = object, .devices = 2});
  EXPECT_EQ(&as_strategy.strategy(), object.get());
}

TEST(DeepSpeedConfig, SixteenMixedIsRefusedAtLaunchBeforeAnyRankStarts) {
  Fabric f({.accelerator = "cpu", .strategy = deepspeed(2), .devices = 2, .precision = "16-mixed"});
  EXPECT_THAT(value_error_of([&] { f.launch(); }),
              HasSubstr("deepspeed: precision '16-mixed' is not supported"));
  EXPECT_FALSE(f.launched());
}

}  // namespace
}  // namespace loom::ddptest
