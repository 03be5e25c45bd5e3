// The memory estimator (fabric/memory_estimate.h) against the allocator: a GPT built on meta is
// estimated, then the same GPT trains for a few steps under ddp, fsdp and deepspeed (stages 1,
// 2 and 3) on 2 real processes, and every rank's allocator peak over the steps (tensor/
// allocator.h: bytes of live tensors, the peak reset after set-up) must be within 10% of the
// estimate's peak (parameters + gradients + optimizer state + communication buffers +
// activations). The bytes the rank held before building the model (the batch, the process
// group's tensors) are subtracted from the measurement: the estimate covers the model's
// training only. The bytes held between steps are checked too, where the layout alone fixes
// them. Single-process tests pin the layouts on hand-counted cases and the refusals.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ddp_harness.h"
#include "fabric/deepspeed.h"
#include "fabric/fsdp.h"
#include "fabric/memory_estimate.h"
#include "fabric_test_util.h"
#include "loom.h"
#include "nn/gpt.h"
#include "tensor/allocator.h"

namespace loom {
namespace {

using namespace ddptest;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr int64_t kBatch = 4, kSeq = 32, kVocab = 256;  // per rank

nn::GPTConfig config() {
  return {.vocab_size = kVocab, .block_size = kSeq, .n_layer = 2, .n_head = 4, .n_embd = 64};
}

// The options of strategy `name` ("ddp", "fsdp", "deepspeed_<stage>"), for the run and for
// the estimate alike.
MemoryEstimateOptions estimate_options(const std::string& name, int world) {
  MemoryEstimateOptions o{.strategy = name.substr(0, name.find('_')),
                          .world_size = world,
                          .optimizer = OptimizerKind::adamw,
                          .batch_size = kBatch,
                          .seq_len = kSeq};
  o.ddp.timeout = 30s;
  o.fsdp = FSDPOptions{.wrap_module_types = {"Block"}, .ddp = o.ddp};
  if (o.strategy == "deepspeed")
    o.deepspeed = DeepSpeedOptions{.stage = std::stoi(name.substr(name.find('_') + 1)),
                                   .reduce_bucket_mb = 0.25,  // several buckets
                                   .allgather_bucket_mb = 0.25,
                                   .timeout = 30s,
                                   .stage3_wrap_module_types = {"Block"}};
  return o;
}

std::shared_ptr<Strategy> make_strategy(const MemoryEstimateOptions& o) {
  if (o.strategy == "ddp") return std::make_shared<DDPStrategy>(o.ddp);
  if (o.strategy == "fsdp") return std::make_shared<FSDPStrategy>(o.fsdp);
  return std::make_shared<DeepSpeedStrategy>(o.deepspeed);
}

LOOM_DDP_SCENARIO(memory_estimate_train) {
  const std::string name = job_env("LOOM_MEMEST_STRATEGY");
  const int world = job_env_int("LOOM_DDP_WORLD", 2);
  MemoryEstimateOptions o = estimate_options(name, world);
  Fabric fabric({.accelerator = "cpu", .strategy = make_strategy(o), .devices = world});
  fabric.launch();
  const int r = fabric.global_rank();

  // The estimate, from a GPT on meta: no bytes.
  MemoryEstimate est, one_process;
  {
    DefaultDeviceGuard meta(Device::meta());
    nn::GPT on_meta(config());
    est = estimate_memory(on_meta, o);
    MemoryEstimateOptions single = o;
    single.strategy = "single";
    single.world_size = 1;
    one_process = estimate_memory(on_meta, single);
  }
  // The bound on sharded state: parameters + gradients + optimizer state at the peak,
  // against 1/W of one process's plus the largest gathered unit.
  record(r, "state_at_peak", double(est.parameters + est.gradients + est.optimizer_state));
  record(r, "one_process_state",
         double(one_process.parameters + one_process.gradients + one_process.optimizer_state));
  record(r, "largest_unit", double(est.largest_unit_gathered));
  fabric.seed_everything(3);
  Generator g(100 + uint64_t(r));
  Tensor idx = empty({kBatch, kSeq + 1}, DType::i64);
  fill_randint(idx, 0, kVocab, g);
  Tensor x = native::contiguous(native::slice(idx, 1, 0, kSeq, 1));
  Tensor y = native::contiguous(native::slice(idx, 1, 1, kSeq + 1, 1)).reshape({-1});
  const int64_t other = memory_stats().current_bytes;  // not the model's

  std::shared_ptr<nn::GPT> model;
  {
    auto ctx = fabric.init_module();  // meta under fsdp and stage 3
    model = std::make_shared<nn::GPT>(config());
  }
  auto m = fabric.setup_module(model);
  auto opt = fabric.setup_optimizers(std::make_shared<optim::AdamW>(m->parameters(), 1e-3));
  reset_peak_memory_stats();
  for (int step = 0; step < 3; ++step) {
    Tensor loss = cross_entropy((*m)(x).reshape({-1, kVocab}), y);
    fabric.backward(loss);
    opt->step();
    opt->zero_grad();
  }
  record(r, "measured_peak", double(memory_stats().peak_bytes - other));
  record(r, "measured_between_steps", double(memory_stats().current_bytes - other));
  record(r, "estimated_peak", double(est.peak));
  record(r, "estimated_between_steps", double(est.between_steps));
  record_text(r, "phase", est.peak_phase);
  fabric.barrier("end");
  record(r, "done", 1.0);
}

void expect_estimate_matches(const std::string& name) {
  Job job = run_job("memory_estimate_train",
                    {{"LOOM_MEMEST_STRATEGY", name}, {"LOOM_DDP_WORLD", "2"}}, 60s);
  ASSERT_TRUE(job.ok()) << job.describe();
  for (int r = 0; r < 2; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    const double measured = rec.value("measured_peak"), estimated = rec.value("estimated_peak");
    std::printf(
        "%s rank %d: peak estimated %.0f bytes (%s), measured %.0f: %.4fx; between "
        "steps %.0f / %.0f\n",
        name.c_str(), r, estimated, rec.text("phase").c_str(), measured, estimated / measured,
        rec.value("estimated_between_steps"), rec.value("measured_between_steps"));
    EXPECT_NEAR(estimated / measured, 1.0, 0.10)
        << name << " rank " << r << ": estimated peak " << estimated << " bytes ("
        << rec.text("phase") << "), measured " << measured;
    if (name == "fsdp" || name == "deepspeed_3") {
      // The estimate is the allocator's peak within 10% (above), and its sharded part obeys:
      const double bound = rec.value("one_process_state") / 2 + rec.value("largest_unit");
      EXPECT_LE(rec.value("state_at_peak"), bound)
          << name << " rank " << r << ": parameters + gradients + optimizer state at the peak";
      std::printf("%s rank %d: state at the peak %.0f bytes <= 1/2 of one process's %.0f + the "
                  "largest unit %.0f\n",
                  name.c_str(), r, rec.value("state_at_peak"), rec.value("one_process_state"),
                  rec.value("largest_unit"));
    }
    const double rest = rec.value("measured_between_steps");
    EXPECT_NEAR(rec.value("estimated_between_steps") / rest, 1.0, 0.02)
        << name << " rank " << r << ": bytes held between steps, measured " << rest;
  }
}

TEST(MemoryEstimate, DdpPeakMatchesTheAllocatorOnTwoRanks) { expect_estimate_matches("ddp"); }
TEST(MemoryEstimate, FsdpPeakMatchesTheAllocatorOnTwoRanks) { expect_estimate_matches("fsdp"); }
TEST(MemoryEstimate, ZeroStage1PeakMatchesTheAllocatorOnTwoRanks) {
  expect_estimate_matches("deepspeed_1");
}
TEST(MemoryEstimate, ZeroStage2PeakMatchesTheAllocatorOnTwoRanks) {
  expect_estimate_matches("deepspeed_2");
}
TEST(MemoryEstimate, ZeroStage3PeakMatchesTheAllocatorOnTwoRanks) {
  expect_estimate_matches("deepspeed_3");
}

// ---- single process: layouts counted by hand ----

// Three Linear(10, 10) (110 parameters each), 330 in all, on meta.
std::shared_ptr<nn::Sequential> three_linears() {
  DefaultDeviceGuard meta(Device::meta());
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(10, 10),
                                          std::make_shared<nn::Linear>(10, 10),
                                          std::make_shared<nn::Linear>(10, 10));
}

TEST(MemoryEstimate, LayoutsOfAThreeLayerModel) {
  auto model = three_linears();
  MemoryEstimateOptions o{.strategy = "ddp", .world_size = 4, .optimizer = OptimizerKind::adam};
  MemoryEstimate ddp = estimate_memory(*model, o);
  EXPECT_EQ(ddp.num_parameters, 330);
  EXPECT_EQ(ddp.parameters, 330 * 4);
  EXPECT_EQ(ddp.optimizer_state, 2 * 330 * 4);
  EXPECT_EQ(ddp.persistent_buffers, 330 * 4);  // the reducer's buckets
  EXPECT_EQ(ddp.between_steps, 4 * 330 * 4);
  EXPECT_EQ(ddp.peak, 5 * 330 * 4);  // + every gradient at the end of backward
  EXPECT_EQ(ddp.gradients, 330 * 4);
  EXPECT_EQ(ddp.communication, 330 * 4);
  EXPECT_EQ(ddp.activations, 0);
  EXPECT_THAT(ddp.activation_note, HasSubstr("nn::GPT only"));

  // fsdp, each Linear a unit by size (110 >= 100): units of 110 padded to 112 on 4 ranks,
  // 28 elements each; the root unit holds nothing and pads to 4 (1 element each).
  o.strategy = "fsdp";
  o.fsdp.min_num_params = 100;
  MemoryEstimate fsdp = estimate_memory(*model, o);
  EXPECT_EQ(fsdp.parameters, (3 * 28 + 1) * 4);
  EXPECT_EQ(fsdp.optimizer_state, 2 * (3 * 28 + 1) * 4);
  EXPECT_EQ(fsdp.largest_unit_gathered, 112 * 4);
  // Its backward peak: each unit's flat gradient (112) stays in flight with its shard output
  // (28) until backward ends, so the peak is at the last unit's reduce: its gradient (110)
  // beside three flats and two outputs, the root (4) and two units (2 x 112) gathered.
  EXPECT_EQ(fsdp.peak,
            fsdp.parameters + fsdp.optimizer_state + (110 + 3 * 112 + 2 * 28 + 4 + 2 * 112) * 4);

  // ZeRO, one bucket of 330 padded to 332: shards of 83; SGD with momentum keeps one buffer
  // over rank 0's 83 elements.
  o.strategy = "deepspeed";
  o.deepspeed.stage = 2;
  o.optimizer = OptimizerKind::sgd_momentum;
  MemoryEstimate z2 = estimate_memory(*model, o);
  EXPECT_EQ(z2.parameters, (330 + 83) * 4);
  EXPECT_EQ(z2.optimizer_state, 83 * 4);
  EXPECT_EQ(z2.zero_paper_bytes, 2 * 330 + 14 * 330 / 4);
}

TEST(MemoryEstimate, TheZeroPapersFormula) {
  // 16 bytes per parameter under data parallelism; 2 + 2 + 12 divided from each stage on.
  EXPECT_EQ(zero_paper_bytes(1000, 0, 8), 16000);
  EXPECT_EQ(zero_paper_bytes(1000, 1, 8), 4000 + 12000 / 8);
  EXPECT_EQ(zero_paper_bytes(1000, 2, 8), 2000 + 14000 / 8);
  EXPECT_EQ(zero_paper_bytes(1000, 3, 8), 16000 / 8);
}

TEST(MemoryEstimate, RefusesWhatItCannotEstimate) {
  auto model = three_linears();
  using fabric_test::value_error_of;
  EXPECT_THAT(value_error_of([&] { estimate_memory(*model, {.strategy = "dp"}); }),
              HasSubstr("unknown strategy 'dp'; use single, ddp, fsdp or deepspeed"));
  EXPECT_THAT(value_error_of([&] { estimate_memory(*model, {.world_size = 0}); }),
              HasSubstr("world_size=0 must be >= 1"));
  EXPECT_THAT(value_error_of([&] { estimate_memory(*model, {.precision = "8-true"}); }),
              HasSubstr("unknown precision '8-true'"));
  MemoryEstimateOptions o{.strategy = "deepspeed"};
  o.deepspeed.stage = 4;
  EXPECT_THAT(value_error_of([&] { estimate_memory(*model, o); }),
              HasSubstr("deepspeed stage 4 is invalid; use 1, 2 or 3"));
  o.deepspeed.stage = 2;
  o.precision = "16-mixed";
  EXPECT_THAT(value_error_of([&] { estimate_memory(*model, o); }),
              HasSubstr("refuses precision '16-mixed'"));
  DefaultDeviceGuard meta(Device::meta());
  nn::GPT gpt(config());
  EXPECT_THAT(value_error_of([&] { estimate_memory(gpt, {.batch_size = 1, .seq_len = kSeq + 1}); }),
              HasSubstr("seq_len 33 exceeds the GPT's block_size 32"));
}

}  // namespace
}  // namespace loom
