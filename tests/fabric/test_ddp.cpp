// DDP on the CPU with 2 and 3 real processes (ddp_harness.h): Fabric's collectives against
// closed forms; training that must equal one process training on the union batch (rank 0's
// broadcast start, averaged gradients, several buckets, gradient accumulation with
// no_backward_sync, unused parameters); bucket all-reduces started during backward; the
// distributed sampler's shards and epochs; checkpoints; and failures that must end with a
// clear error instead of a hang (unused parameters, a killed rank, mismatched collectives).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "autograd/grad_mode.h"
#include "data/dataloader.h"
#include "data/dataset.h"
#include "data/distributed_sampler.h"
#include "fabric/ddp.h"
#include "fabric/fabric.h"
#include "nn/activation.h"
#include "nn/linear.h"
#include "optim/sgd.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tests/fabric/ddp_harness.h"

namespace loom::ddptest {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// ---- the model, data and single-process reference shared by the parent and the ranks ----

constexpr int64_t kIn = 4, kHidden = 16, kOut = 3;
constexpr int64_t kRows = 12;  // rows of one full batch; divisible by 2 and 3 ranks
constexpr double kLr = 0.1, kMomentum = 0.9;

// Two layers and a buffer; `spare` (optional) takes no part in forward.
class Net : public nn::Module {
 public:
  explicit Net(bool with_spare) {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(kIn, kHidden));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(kHidden, kOut));
    if (with_spare) spare = register_module("spare", std::make_shared<nn::Linear>(kOut, kOut));
    shift = register_buffer("shift", randn({kOut}));
  }
  Tensor forward(const Tensor& x) override { return (*fc2)((*fc1)(x).tanh()) + shift; }
  std::string name() const override { return "Net"; }

  std::shared_ptr<nn::Linear> fc1, fc2, spare;
  Tensor shift;
};

// Micro-batch `micro` of step `step`: the same everywhere, from its own generator.
std::pair<Tensor, Tensor> full_batch(int step, int micro) {
  Generator g(1000 + 10 * uint64_t(step) + uint64_t(micro));
  Tensor x = empty({kRows, kIn});
  Tensor y = empty({kRows, kOut});
  fill_normal(x, 0.0, 1.0, g);
  fill_normal(y, 0.0, 1.0, g);
  return {x, y};
}

// One process, the whole batch, the mean loss: what DDP must reproduce.
std::vector<double> reference_training(const std::vector<double>& init, bool with_spare, int steps,
                                       int accumulate) {
  auto model = std::make_shared<Net>(with_spare);
  load_flat_state(*model, init);
  optim::SGD opt(model->parameters(), kLr, {.momentum = kMomentum});
  for (int s = 0; s < steps; ++s) {
    for (int m = 0; m < accumulate; ++m) {
      auto [x, y] = full_batch(s, m);
      (mse_loss((*model)(x), y) / double(accumulate)).backward();
    }
    opt.step();
    opt.zero_grad();
  }
  return flat_state(*model);
}

// Every job uses short collective timeouts, so that a broken rank fails a test quickly.
std::shared_ptr<DDPStrategy> ddp(DDPOptions o = {.timeout = 10s}) {
  return std::make_shared<DDPStrategy>(o);
}

Reducer& reducer_of(const FabricModule& fm) {
  return std::dynamic_pointer_cast<DistributedDataParallel>(fm.forward_module())->reducer();
}

// ---- collectives ----

LOOM_DDP_SCENARIO(collectives) {
  int world = job_env_int("LOOM_DDP_WORLD", 2);
  Fabric fabric({.accelerator = "cpu", .strategy = ddp(), .devices = world});
  fabric.launch();
  int r = fabric.global_rank();
  Tensor t = full({2, 3}, double(r + 1));
  record(r, "sum", fabric.all_reduce(t, ReduceOp::sum));
  record(r, "avg", fabric.all_reduce(t, ReduceOp::avg));
  record(r, "max", fabric.all_reduce(t, ReduceOp::max));
  record(r, "min", fabric.all_reduce(t, ReduceOp::min));
  record(r, "input_after", t);
  record(r, "sum_i64", fabric.all_reduce(full({3}, int64_t(r + 1), DType::i64), ReduceOp::sum));
  record(r, "scalar_sum", fabric.all_reduce(double(r + 1), ReduceOp::sum));
  record(r, "scalar_avg", fabric.all_reduce(double(r + 1)));
  record(r, "scalar_max", fabric.all_reduce(double(r + 1), ReduceOp::max));
  record(r, "scalar_min", fabric.all_reduce(double(r + 1), ReduceOp::min));
  Tensor gathered = fabric.all_gather(full({2, 3}, double(r)));
  record(r, "gather_shape", std::vector<double>(gathered.sizes().begin(), gathered.sizes().end()));
  record(r, "gather", gathered);
  record(r, "broadcast", fabric.broadcast(full({4}, double(10 * r + 1)), world - 1));
  record(r, "broadcast_scalar", fabric.broadcast(double(r) + 0.5, 1));
  fabric.barrier("end");
  record(r, "done", 1.0);
}

void expect_collectives(int world) {
  Job job = run_job("collectives", {{"LOOM_DDP_WORLD", std::to_string(world)}});
  ASSERT_TRUE(job.ok()) << job.describe();
  double n = world;
  auto filled = [](size_t count, double v) { return std::vector<double>(count, v); };
  std::vector<double> gather;
  for (int k = 0; k < world; ++k)
    for (int i = 0; i < 6; ++i) gather.push_back(k);
  for (int r = 0; r < world; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    EXPECT_EQ(rec.values("sum"), filled(6, n * (n + 1) / 2)) << "rank " << r;
    EXPECT_EQ(rec.values("avg"), filled(6, (n + 1) / 2)) << "rank " << r;
    EXPECT_EQ(rec.values("max"), filled(6, n)) << "rank " << r;
    EXPECT_EQ(rec.values("min"), filled(6, 1.0)) << "rank " << r;
    EXPECT_EQ(rec.values("input_after"), filled(6, r + 1.0)) << "the input is not modified";
    EXPECT_EQ(rec.values("sum_i64"), filled(3, n * (n + 1) / 2));
    EXPECT_EQ(rec.value("scalar_sum"), n * (n + 1) / 2);
    EXPECT_EQ(rec.value("scalar_avg"), (n + 1) / 2);
    EXPECT_EQ(rec.value("scalar_max"), n);
    EXPECT_EQ(rec.value("scalar_min"), 1.0);
    EXPECT_EQ(rec.values("gather_shape"), (std::vector<double>{n, 2, 3}));
    EXPECT_EQ(rec.values("gather"), gather);
    EXPECT_EQ(rec.values("broadcast"), filled(4, 10 * (n - 1) + 1));
    EXPECT_EQ(rec.value("broadcast_scalar"), 1.5);
  }
}

TEST(DdpCollectives, MatchClosedFormsTwoRanks) { expect_collectives(2); }
TEST(DdpCollectives, MatchClosedFormsThreeRanks) { expect_collectives(3); }

// ---- training equivalence ----

// Each rank trains on its rows of every batch; LOOM_DDP_* select world size, bucket size,
// accumulation, the unused `spare` layer and find_unused_parameters.
LOOM_DDP_SCENARIO(train) {
  int world = job_env_int("LOOM_DDP_WORLD", 2);
  int steps = job_env_int("LOOM_DDP_STEPS", 3);
  int accumulate = job_env_int("LOOM_DDP_ACCUMULATE", 1);
  bool spare = job_env_int("LOOM_DDP_SPARE", 0) == 1;
  bool zero_to_none = job_env_int("LOOM_DDP_ZERO_TO_NONE", 1) == 1;
  DDPOptions o{.bucket_cap_mb = job_env_double("LOOM_DDP_BUCKET_MB", 25.0),
               .find_unused_parameters = job_env_int("LOOM_DDP_FIND_UNUSED", 0) == 1,
               .gradient_as_bucket_view = job_env_int("LOOM_DDP_AS_VIEW", 1) == 1,
               .timeout = 10s};
  Fabric fabric({.accelerator = "cpu", .strategy = ddp(o), .devices = world});
  fabric.launch();
  int r = fabric.global_rank();
  fabric.seed_everything(1234);  // a different seed, so a different init, on every rank
  std::shared_ptr<Net> model;
  {
    auto ctx = fabric.init_module();
    model = std::make_shared<Net>(spare);
  }
  record(r, "init_local", flat_state(*model));
  auto opt = std::make_shared<optim::SGD>(model->parameters(), kLr,
                                          optim::SGDOptions{.momentum = kMomentum});
  auto [fm, fo] = fabric.setup(model, opt);
  record(r, "init", flat_state(*model));
  Reducer& reducer = reducer_of(*fm);
  record(r, "buckets", double(reducer.num_buckets()));

  // Overlap probe: fc1's weight gradient is among the last of a backward; count the buckets
  // already launched when it arrives.
  int64_t launched_before = 0;
  double launched_when_fc1_ready = -1;
  bool probing = false;
  int hook = model->fc1->weight.register_post_accumulate_grad_hook([&](Tensor&) {
    if (probing)
      launched_when_fc1_ready = std::max(
          launched_when_fc1_ready,
          double(reducer.stats().buckets_launched_during_backward - launched_before));
  });

  int64_t per = kRows / world;
  try {
    for (int s = 0; s < steps; ++s) {
      for (int m = 0; m < accumulate; ++m) {
        auto [x, y] = full_batch(s, m);
        Tensor xr = x.narrow(0, r * per, per).contiguous();
        Tensor yr = y.narrow(0, r * per, per).contiguous();
        bool last = m + 1 == accumulate;
        auto no_sync = fabric.no_backward_sync(*fm, /*enabled=*/!last);
        Tensor loss = mse_loss((*fm)(xr), yr) / double(accumulate);
        launched_before = reducer.stats().buckets_launched_during_backward;
        probing = last && s == 0;
        fabric.backward(loss);
        probing = false;
      }
      if (s == 0) {
        // Whether the synchronised gradients share one storage (one bucket holds them all
        // at the default bucket size): the bucket's.
        const Tensor& first = fm->parameters().front().grad();
        bool shared = true;
        for (const Tensor& p : fm->parameters()) shared &= p.grad().storage() == first.storage();
        record(r, "grads_share_storage", shared ? 1.0 : 0.0);
      }
      fo->step();
      fo->zero_grad(zero_to_none);
    }
    record(r, "final", flat_state(*model));
  } catch (const std::exception& e) {
    record_text(r, "error", e.what());
  }
  model->fc1->weight.remove_hook(hook);
  record(r, "launched_when_fc1_ready", launched_when_fc1_ready);
  record(r, "launched", {double(reducer.stats().buckets_launched_during_backward),
                         double(reducer.stats().buckets_launched_at_finalize)});
  fabric.barrier();
  record(r, "done", 1.0);
}

struct TrainCase {
  int world = 2;
  int steps = 3;
  int accumulate = 1;
  double bucket_mb = 25.0;
  bool spare = false;
  bool find_unused = false;
  bool as_view = true;
  bool zero_to_none = true;
};

Job run_training(const TrainCase& c) {
  return run_job("train", {{"LOOM_DDP_WORLD", std::to_string(c.world)},
                           {"LOOM_DDP_STEPS", std::to_string(c.steps)},
                           {"LOOM_DDP_ACCUMULATE", std::to_string(c.accumulate)},
                           {"LOOM_DDP_BUCKET_MB", std::to_string(c.bucket_mb)},
                           {"LOOM_DDP_SPARE", c.spare ? "1" : "0"},
                           {"LOOM_DDP_FIND_UNUSED", c.find_unused ? "1" : "0"},
                           {"LOOM_DDP_AS_VIEW", c.as_view ? "1" : "0"},
                           {"LOOM_DDP_ZERO_TO_NONE", c.zero_to_none ? "1" : "0"}});
}

// Every rank ends where one process training on the union batch ends, from rank 0's start.
void expect_matches_reference(const TrainCase& c, const Job& job) {
  ASSERT_TRUE(job.ok()) << job.describe();
  RankRecord zero = job.rank(0);
  std::vector<double> init = zero.values("init_local");
  ASSERT_FALSE(init.empty()) << job.describe();
  std::vector<double> expected = reference_training(init, c.spare, c.steps, c.accumulate);
  EXPECT_GT(max_abs_diff(expected, init), 1e-2) << "the reference must actually train";
  for (int r = 0; r < c.world; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    EXPECT_EQ(rec.text("error"), "") << "rank " << r;
    if (r > 0) {  // seeded differently, so different until set-up broadcasts rank 0's state
      EXPECT_GT(max_abs_diff(rec.values("init_local"), init), 1e-3) << "rank " << r;
    }
    EXPECT_EQ(max_abs_diff(rec.values("init"), init), 0.0) << "rank " << r;
    EXPECT_LT(max_abs_diff(rec.values("final"), expected), 1e-5) << "rank " << r;
  }
}

TEST(DdpTraining, TwoRanksMatchOneProcessOnTheUnionBatch) {
  TrainCase c;
  Job job = run_training(c);
  expect_matches_reference(c, job);
  EXPECT_EQ(job.rank(0).value("buckets"), 1.0);  // 25 MiB holds the whole model
}

TEST(DdpTraining, SynchronisedGradientsAreViewsOfTheBucketByDefault) {
  TrainCase c;
  Job job = run_training(c);
  expect_matches_reference(c, job);
  for (int r = 0; r < 2; ++r) EXPECT_EQ(job.rank(r).value("grads_share_storage"), 1.0) << r;
}

TEST(DdpTraining, WithoutBucketViewsGradientsKeepTheirOwnStorage) {
  TrainCase c{.accumulate = 2, .as_view = false};
  Job job = run_training(c);
  expect_matches_reference(c, job);
  for (int r = 0; r < 2; ++r) EXPECT_EQ(job.rank(r).value("grads_share_storage"), 0.0) << r;
}

TEST(DdpTraining, GradientsZeroedInPlaceStayBucketViewsAndAccumulateThere) {
  // zero_grad(false) zeroes the bucket views; later backwards accumulate into them in place
  // (no_backward_sync) and the synchronised one reduces them without a copy.
  TrainCase c{.steps = 3, .accumulate = 2, .zero_to_none = false};
  expect_matches_reference(c, run_training(c));
}

TEST(DdpTraining, ThreeRanksWithSeveralBucketsMatchOneProcess) {
  TrainCase c{.world = 3, .bucket_mb = 1e-5};  // ~10 bytes: one bucket per parameter
  Job job = run_training(c);
  expect_matches_reference(c, job);
  EXPECT_EQ(job.rank(0).value("buckets"), 4.0);
  EXPECT_EQ(job.rank(2).value("buckets"), 4.0);
}

TEST(DdpTraining, BucketAllReducesStartWhileBackwardStillRuns) {
  // With one bucket per parameter, fc2's buckets are in flight before fc1's weight gradient
  // even exists: the all-reduce overlaps the rest of backward.
  TrainCase c{.world = 2, .steps = 1, .bucket_mb = 1e-5};
  Job job = run_training(c);
  expect_matches_reference(c, job);
  for (int r = 0; r < 2; ++r) {
    RankRecord rec = job.rank(r);
    EXPECT_GE(rec.value("launched_when_fc1_ready"), 2.0) << "rank " << r;
    std::vector<double> launched = rec.values("launched");
    ASSERT_EQ(launched.size(), 2u);
    EXPECT_GT(launched[0], 0.0);
  }
}

TEST(DdpTraining, NoBackwardSyncAccumulatesAndTheSyncedBackwardReducesTheSum) {
  TrainCase c{.world = 2, .steps = 2, .accumulate = 3, .bucket_mb = 1e-5};
  Job job = run_training(c);
  expect_matches_reference(c, job);
  // Only the last backward of each step reduced: 2 steps x 4 buckets.
  std::vector<double> launched = job.rank(0).values("launched");
  ASSERT_EQ(launched.size(), 2u);
  EXPECT_EQ(launched[0] + launched[1], 8.0);
}

TEST(DdpTraining, NoBackwardSyncWithThreeRanks) {
  TrainCase c{.world = 3, .steps = 2, .accumulate = 2};
  expect_matches_reference(c, run_training(c));
}

TEST(DdpTraining, FindUnusedParametersTreatsThemAsReadyWithZeroGradients) {
  TrainCase c{.world = 2, .steps = 2, .bucket_mb = 1e-5, .spare = true, .find_unused = true};
  Job job = run_training(c);
  expect_matches_reference(c, job);
}

TEST(DdpTraining, UnusedParametersWithoutFindUnusedFailEveryRankNamingThem) {
  TrainCase c{.world = 2, .steps = 1, .spare = true, .find_unused = false};
  Job job = run_training(c);
  ASSERT_TRUE(job.ok()) << job.describe();
  for (int r = 0; r < 2; ++r) {
    RankRecord rec = job.rank(r);
    EXPECT_EQ(rec.value("done"), 1.0) << job.describe();  // no hang: the barrier after it ran
    EXPECT_FALSE(rec.has("final"));
    EXPECT_THAT(rec.text("error"), HasSubstr("spare.weight")) << "rank " << r;
    EXPECT_THAT(rec.text("error"), HasSubstr("spare.bias")) << "rank " << r;
    EXPECT_THAT(rec.text("error"), HasSubstr("find_unused_parameters"));
    EXPECT_THAT(rec.text("error"), ::testing::Not(HasSubstr("fc1")));
  }
}

// ---- data ----

LOOM_DDP_SCENARIO(data) {
  int world = job_env_int("LOOM_DDP_WORLD", 2);
  Fabric fabric({.accelerator = "cpu", .strategy = ddp(), .devices = world});
  fabric.launch();
  int r = fabric.global_rank();
  auto dataset = std::make_shared<data::TensorDataset>(
      std::vector<Tensor>{arange(int64_t(kRows), DType::i64)});
  auto loader = std::make_shared<data::DataLoader>(
      dataset, data::DataLoaderOptions{.batch_size = 2, .shuffle = true, .seed = 3});
  auto sharded = fabric.setup_dataloaders(loader);
  auto epoch = [&] {
    std::vector<double> seen;
    for (data::Batch& b : *sharded)
      for (int64_t v : b[0].to_vector<int64_t>()) seen.push_back(double(v));
    return seen;
  };
  record(r, "size", double(sharded->size()));
  record(r, "epoch0", epoch());
  record(r, "epoch1", epoch());
  auto sampler = std::dynamic_pointer_cast<data::DistributedSampler>(sharded->loader()->sampler());
  record(r, "distributed", sampler ? 1.0 : 0.0);
  if (sampler) {
    sampler->set_epoch(7);
    record(r, "explicit_a", epoch());
    record(r, "explicit_b", epoch());  // an explicit epoch is left alone
  }
  fabric.barrier();
  record(r, "done", 1.0);
}

std::vector<double> shard(int world, int rank, int64_t epoch) {
  data::DistributedSampler s(kRows, world, rank, /*shuffle=*/true, /*seed=*/3);
  s.set_epoch(epoch);
  std::vector<double> out;
  for (int64_t i : s.indices()) out.push_back(double(i));
  return out;
}

void expect_sharded_epochs(int world) {
  Job job = run_job("data", {{"LOOM_DDP_WORLD", std::to_string(world)}});
  ASSERT_TRUE(job.ok()) << job.describe();
  for (const char* e : {"epoch0", "epoch1"}) {
    std::multiset<double> all;
    for (int r = 0; r < world; ++r)
      for (double v : job.rank(r).values(e)) all.insert(v);
    std::multiset<double> expected;
    for (int64_t i = 0; i < kRows; ++i) expected.insert(double(i));
    EXPECT_EQ(all, expected) << e << ": the shards are disjoint and cover the dataset";
  }
  for (int r = 0; r < world; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    EXPECT_EQ(rec.value("distributed"), 1.0);
    EXPECT_EQ(rec.value("size"), double(kRows / world / 2));  // batches of 2
    // One permutation per epoch, the same on every rank (the sampler's own rule).
    EXPECT_EQ(rec.values("epoch0"), shard(world, r, 0)) << "rank " << r;
    EXPECT_EQ(rec.values("epoch1"), shard(world, r, 1)) << "rank " << r;
    EXPECT_NE(rec.values("epoch0"), rec.values("epoch1")) << "rank " << r;
    EXPECT_EQ(rec.values("explicit_a"), shard(world, r, 7)) << "rank " << r;
    EXPECT_EQ(rec.values("explicit_b"), shard(world, r, 7)) << "rank " << r;
  }
}

TEST(DdpData, EachRankGetsItsShardAndEpochsAdvanceTwoRanks) { expect_sharded_epochs(2); }
TEST(DdpData, EachRankGetsItsShardAndEpochsAdvanceThreeRanks) { expect_sharded_epochs(3); }

// ---- checkpoints ----

LOOM_DDP_SCENARIO(checkpoint) {
  Fabric fabric({.accelerator = "cpu", .strategy = ddp(), .devices = 2});
  fabric.launch();
  int r = fabric.global_rank();
  fabric.seed_everything(5);
  auto model = std::make_shared<Net>(false);
  auto opt = std::make_shared<optim::SGD>(model->parameters(), kLr);
  auto [fm, fo] = fabric.setup(model, opt);
  auto [x, y] = full_batch(0, 0);
  fabric.backward(mse_loss((*fm)(x.narrow(0, r * 6, 6).contiguous()), y.narrow(0, r * 6, 6).contiguous()));
  fo->step();
  record(r, "saved", flat_state(*model));
  std::string path = job_dir() + "/model.safetensors";
  fabric.save(path, {{"model", model}, {"step", int64_t(1)}});
  // Rank 0 wrote it; every rank returns from save() only once it is complete.
  std::error_code ec;
  record(r, "file_after_save", std::filesystem::file_size(path, ec) > 0 && !ec ? 1.0 : 0.0);
  {
    NoGradGuard no_grad;
    for (const Tensor& p : model->parameters()) native::fill_(p, 100.0 + r);
  }
  CheckpointState state{{"model", model}, {"step", int64_t(0)}};
  fabric.load(path, state);
  record(r, "loaded", flat_state(*model));
  record(r, "step", double(std::get<int64_t>(state.at("step"))));
  fabric.barrier();
  record(r, "done", 1.0);
}

TEST(DdpCheckpoint, RankZeroWritesAndEveryRankLoadsTheSameParameters) {
  Job job = run_job("checkpoint");
  ASSERT_TRUE(job.ok()) << job.describe();
  std::vector<double> saved = job.rank(0).values("saved");
  ASSERT_FALSE(saved.empty()) << job.describe();
  for (int r = 0; r < 2; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    EXPECT_EQ(rec.values("saved"), saved) << "DDP kept the ranks identical";
    EXPECT_EQ(rec.value("file_after_save"), 1.0) << "rank " << r;
    EXPECT_EQ(rec.values("loaded"), saved) << "rank " << r;
    EXPECT_EQ(rec.value("step"), 1.0);
  }
}

// ---- failures ----

LOOM_DDP_SCENARIO(killed_rank) {
  Fabric fabric({.accelerator = "cpu", .strategy = ddp({.timeout = 3s}), .devices = 2});
  fabric.launch();
  int r = fabric.global_rank();
  auto model = std::make_shared<Net>(false);
  auto opt = std::make_shared<optim::SGD>(model->parameters(), kLr);
  auto [fm, fo] = fabric.setup(model, opt);
  try {
    for (int s = 0; s < 4; ++s) {
      if (r == 1 && s == 2) ::raise(SIGKILL);  // dies between two steps, no goodbye
      auto [x, y] = full_batch(s, 0);
      fabric.backward(mse_loss((*fm)(x.narrow(0, r * 6, 6).contiguous()), y.narrow(0, r * 6, 6).contiguous()));
      fo->step();
      fo->zero_grad();
      record(r, "step", double(s));
    }
  } catch (const std::exception& e) {
    record_text(r, "error", e.what());
  }
  record(r, "done", 1.0);
}

TEST(DdpFailures, AKilledRankMakesTheOthersFailWithAClearErrorWithinTheTimeout) {
  Job job = run_job("killed_rank", {}, 30s);
  EXPECT_FALSE(job.result.timed_out) << job.describe();
  RankRecord zero = job.rank(0), one = job.rank(1);
  EXPECT_EQ(one.count("step"), 2u);  // two steps, then killed
  EXPECT_FALSE(one.has("done"));
  EXPECT_EQ(zero.value("done"), 1.0) << job.describe();
  std::string error = zero.text("error");
  EXPECT_THAT(error, HasSubstr("all_reduce")) << job.describe();
  EXPECT_THAT(error, HasSubstr("died")) << job.describe();
  // Rank 0's launcher reports how rank 1 ended.
  EXPECT_THAT(job.output, HasSubstr("rank 1")) << job.describe();
  EXPECT_THAT(job.output, HasSubstr("signal 9")) << job.describe();
}

LOOM_DDP_SCENARIO(mismatch) {
  int world = job_env_int("LOOM_DDP_WORLD", 2);
  DDPOptions o{.timeout = 5s, .debug_collectives = job_env("LOOM_DDP_DEBUG_OPTION") == "1"};
  Fabric fabric({.accelerator = "cpu", .strategy = ddp(o), .devices = world});
  fabric.launch();
  int r = fabric.global_rank();
  record(r, "agreed", fabric.all_reduce(double(r), ReduceOp::sum));
  try {
    if (r == 0)
      fabric.all_reduce(full({3}, 1.0), ReduceOp::sum);
    else if (r == 1)
      fabric.broadcast(full({3}, 1.0), 0);
    else
      fabric.all_reduce(full({4}, 1.0), ReduceOp::sum);
    record(r, "no_error", 1.0);
  } catch (const std::exception& e) {
    record_text(r, "error", e.what());
  }
  record(r, "done", 1.0);
}

void expect_mismatch_named(int world, const dist::EnvMap& env) {
  Job job = run_job("mismatch", env, 30s);
  ASSERT_TRUE(job.ok()) << job.describe();
  for (int r = 0; r < world; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    EXPECT_EQ(rec.value("agreed"), world * (world - 1) / 2.0);
    std::string error = rec.text("error");
    EXPECT_THAT(error, HasSubstr("mismatch")) << "rank " << r << "\n" << job.describe();
    EXPECT_THAT(error, HasSubstr("all_reduce(f32, [3], sum)")) << "rank " << r;
    EXPECT_THAT(error, HasSubstr("broadcast(f32, [3]")) << "rank " << r;
    if (world == 3) {
      EXPECT_THAT(error, HasSubstr("all_reduce(f32, [4], sum)")) << "rank " << r;
    }
  }
}

TEST(DdpFailures, DebugCollectivesFromTheEnvironmentNameWhatEachRankCalled) {
  expect_mismatch_named(2, {{"LOOM_DEBUG_COLLECTIVES", "1"}});
}

TEST(DdpFailures, DebugCollectivesEnvironmentValuesFollowTheProcessGroupsRule) {
  // Any value but "", "0" and "false" turns it on, as for a process group built directly.
  expect_mismatch_named(2, {{"LOOM_DEBUG_COLLECTIVES", "true"}});
}

TEST(DdpFailures, DebugCollectivesFromDDPOptionsNameWhatEachRankCalledThreeRanks) {
  expect_mismatch_named(3, {{"LOOM_DDP_WORLD", "3"}, {"LOOM_DDP_DEBUG_OPTION", "1"}});
}

}  // namespace
}  // namespace loom::ddptest
