// Sharded checkpoints (fabric/sharded_checkpoint.h) in real processes: saved by fsdp at 4 ranks
// and by deepspeed stages 1 and 2 at 4 ranks, they load at 2 and at 3 ranks (3 does not divide
// the shards evenly: other padding, pieces read from several files) and training continues to
// where an uninterrupted 4-rank run ends; they load into a plain model in one process too. A
// refused load (a shard file deleted, a byte flipped) changes no parameter and no optimizer
// state on any rank, and every rank's error names the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fabric/deepspeed.h"
#include "fabric/fsdp.h"
#include "fabric/io/atomic_file.h"
#include "fabric/sharded_checkpoint.h"
#include "loom.h"
#include "nn/gpt.h"
#include "tests/fabric/ddp_harness.h"
#include "tests/fabric/fabric_test_util.h"

namespace loom::ddptest {
namespace {

using namespace std::chrono_literals;
using fabric_test::TempDir;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr int64_t kBatch = 12, kSeq = 8;  // global batch rows: divisible by 2, 3 and 4 ranks
constexpr uint64_t kSeed = 7;
constexpr double kLr = 1e-2;

// ---- data and models ----

nn::GPTConfig gpt_config() {
  return {.vocab_size = 32, .block_size = kSeq, .n_layer = 2, .n_head = 2, .n_embd = 16};
}

std::pair<Tensor, Tensor> gpt_batch(int step) {
  return fabric_test::token_batch(900 + uint64_t(step), kBatch, kSeq, 32);
}

using fabric_test::rows;

Tensor gpt_loss(nn::Module& m, const Tensor& idx, const Tensor& targets) {
  return fabric_test::lm_loss(m, idx, targets, 32);
}

// Odd sizes, so that ZeRO's shards cut parameters and a 3-element bias lands on one rank.
class Mlp : public nn::Module {
 public:
  explicit Mlp(int64_t hidden = 17) {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(5, hidden));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(hidden, 3));
  }
  Tensor forward(const Tensor& x) override { return (*fc2)((*fc1)(x).tanh()); }
  std::string name() const override { return "Mlp"; }
  std::shared_ptr<nn::Linear> fc1, fc2;
};

std::pair<Tensor, Tensor> mlp_batch(int step) {
  Generator g(4000 + uint64_t(step));
  Tensor x = empty({kBatch, 5});
  Tensor y = empty({kBatch, 3});
  fill_normal(x, 0.0, 1.0, g);
  fill_normal(y, 0.0, 1.0, g);
  return {x, y};
}

std::shared_ptr<optim::AdamW> adamw(const std::vector<Tensor>& params) {
  return std::make_shared<optim::AdamW>(params, kLr, optim::AdamWOptions{.weight_decay = 0.05});
}

std::vector<double> flat(const nn::StateDict& sd) {
  std::vector<double> out;
  for (const auto& [n, t] : sd) {
    std::vector<double> v =
        native::to(native::contiguous(t.detach()), Device::cpu(), DType::f64).to_vector<double>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// This rank's optimizer state: every step, then every buffer's values, in state-dict order.
std::vector<double> flat_optimizer(const optim::Optimizer& opt) {
  std::vector<double> out;
  for (const auto& [index, st] : opt.state_dict().state) {
    out.push_back(double(index));
    out.push_back(double(st.step));
    for (const auto& [n, t] : st.buffers) {
      std::vector<double> v =
          native::to(native::contiguous(t), Device::cpu(), DType::f64).to_vector<double>();
      out.insert(out.end(), v.begin(), v.end());
    }
  }
  return out;
}

// ---- the scenario: train, save, or load and continue ----
//
// LOOM_SC_MODE: "save" trains STEPS_BEFORE steps, saves sharded to LOOM_SC_CKPT, and goes on
// STEPS_AFTER steps (the uninterrupted run); "resume" builds everything from another seed,
// loads, and trains the STEPS_AFTER steps; "refuse" records the state, tries the load (which
// must fail) and records the state again. LOOM_SC_STRATEGY: "fsdp" (GPT, a unit per Block) or
// "deepspeed" (Mlp, LOOM_SC_STAGE, small buckets).
LOOM_DDP_SCENARIO(sharded) {
  const int world = job_env_int("LOOM_SC_WORLD", 2);
  const std::string mode = job_env("LOOM_SC_MODE");
  const std::string path = job_env("LOOM_SC_CKPT");
  const int before = job_env_int("LOOM_SC_STEPS_BEFORE", 2);
  int after = job_env_int("LOOM_SC_STEPS_AFTER", 2);
  const bool fsdp = job_env("LOOM_SC_STRATEGY") == "fsdp";
  std::shared_ptr<Strategy> strategy;
  if (fsdp)
    strategy = std::make_shared<FSDPStrategy>(FSDPOptions{
        .wrap_module_types = {"Block"}, .ddp = {.timeout = 20s}, .state_dict_type = "sharded"});
  else
    strategy = std::make_shared<DeepSpeedStrategy>(
        DeepSpeedOptions{.stage = job_env_int("LOOM_SC_STAGE", 2),
                         .reduce_bucket_mb = 0.0002,  // ~200 bytes: several buckets
                         .allgather_bucket_mb = 0.0002,
                         .timeout = 20s,
                         .state_dict_type = "sharded"});
  Fabric fabric({.accelerator = "cpu", .strategy = strategy, .devices = world});
  fabric.launch();
  const int r = fabric.global_rank();
  fabric.seed_everything(mode == "save" ? kSeed : kSeed + 1);  // a load replaces the values
  std::shared_ptr<FabricModule> m;
  std::shared_ptr<FabricOptimizer> opt;
  if (fsdp) {
    std::shared_ptr<nn::GPT> model;
    {
      auto ctx = fabric.init_module();
      model = std::make_shared<nn::GPT>(gpt_config());
    }
    m = fabric.setup_module(model);
    opt = fabric.setup_optimizers(adamw(m->parameters()));
  } else if (job_env_int("LOOM_SC_STAGE", 2) == 3) {  // the optimizer over the shards
    m = fabric.setup_module(std::make_shared<Mlp>());
    opt = fabric.setup_optimizers(adamw(m->parameters()));
  } else {
    auto model = std::make_shared<Mlp>();
    std::tie(m, opt) = fabric.setup(model, adamw(model->parameters()));
  }
  const int64_t per = kBatch / world;
  auto train_step = [&](int s) {
    Tensor loss;
    if (fsdp) {
      auto [x, y] = gpt_batch(s);
      loss = gpt_loss(*m, rows(x, r * per, per), rows(y, r * per, per));
    } else {
      auto [x, y] = mlp_batch(s);
      loss = mse_loss((*m)(rows(x, r * per, per)), rows(y, r * per, per));
    }
    fabric.backward(loss);
    opt->step();
    opt->zero_grad();
  };
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(m)},
                        {"optimizer", std::shared_ptr<optim::Optimizer>(opt)},
                        {"step", int64_t(0)}};
  int first = 0;
  if (mode == "save") {
    for (int s = 0; s < before; ++s) train_step(s);
    state["step"] = int64_t(before);
    fabric.save(path, state);
    record(r, "at_save", flat(m->state_dict()));
    first = before;
  } else if (mode == "resume") {
    fabric.load(path, state);
    first = int(std::get<int64_t>(state.at("step")));
    record(r, "loaded", flat(m->state_dict()));
  } else if (mode == "failed_save") {  // a good save, then one that fails on rank 1 only
    train_step(0);
    state["step"] = int64_t(1);
    fabric.save(path, state);
    record(r, "at_save", flat(m->state_dict()));
    train_step(1);
    CheckpointState broken = state;
    broken["extra"] = r == 1 ? Tensor() : zeros({2});
    try {
      fabric.save(path, broken);
      record_text(r, "error", "none");
    } catch (const ValueError& e) {
      record_text(r, "error", e.what());
    }
    fabric.load(path, state);
    record(r, "loaded", flat(m->state_dict()));
    after = 0;
  } else {          // refuse
    train_step(0);  // some optimizer state to keep
    record(r, "model_before", flat(m->state_dict()));
    record(r, "optimizer_before", flat_optimizer(*opt));
    try {
      fabric.load(path, state);
      record_text(r, "error", "none");
    } catch (const ValueError& e) {
      record_text(r, "error", e.what());
    }
    record(r, "model_after", flat(m->state_dict()));
    record(r, "optimizer_after", flat_optimizer(*opt));
    record(r, "step_after", double(std::get<int64_t>(state.at("step"))));
    after = 0;
  }
  for (int s = first; s < first + after; ++s) train_step(s);
  record(r, "final", flat(m->state_dict()));
  fabric.barrier("end");
  record(r, "done", 1.0);
}

Job run_sharded(const std::string& strategy, int stage, int world, const std::string& mode,
                const std::string& path, int before = 2, int after = 2) {
  return run_job("sharded",
                 {{"LOOM_SC_STRATEGY", strategy},
                  {"LOOM_SC_STAGE", std::to_string(stage)},
                  {"LOOM_SC_WORLD", std::to_string(world)},
                  {"LOOM_SC_MODE", mode},
                  {"LOOM_SC_CKPT", path},
                  {"LOOM_SC_STEPS_BEFORE", std::to_string(before)},
                  {"LOOM_SC_STEPS_AFTER", std::to_string(after)}},
                 60s);
}

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Saves at 4 ranks (and goes on: the uninterrupted run), then resumes at 2 and at 3 ranks.
void expect_resumes_at_other_world_sizes(const std::string& strategy, int stage) {
  TempDir dir;
  const std::string path = dir.file("ckpt");
  Job saved = run_sharded(strategy, stage, 4, "save", path);
  ASSERT_TRUE(saved.ok()) << saved.describe();
  // The index and one file per rank; no temp file is left.
  std::vector<std::string> files = listing(path);
  ASSERT_EQ(files.size(), 5u) << ::testing::PrintToString(files);
  EXPECT_EQ(files[0], "index.json");
  for (int r = 0; r < 4; ++r)
    EXPECT_THAT(files[size_t(r) + 1],
                ::testing::StartsWith("shard-0000" + std::to_string(r) + "-of-00004-"));
  const std::vector<double> at_save = saved.rank(0).values("at_save");
  const std::vector<double> expected = saved.rank(0).values("final");
  ASSERT_FALSE(expected.empty());
  EXPECT_GT(max_abs_diff(expected, at_save), 1e-4) << "the steps after the save must train";
  for (int world : {2, 3}) {
    Job resumed = run_sharded(strategy, stage, world, "resume", path);
    ASSERT_TRUE(resumed.ok()) << resumed.describe();
    for (int r = 0; r < world; ++r) {
      RankRecord rec = resumed.rank(r);
      ASSERT_EQ(rec.value("done"), 1.0) << resumed.describe();
      EXPECT_EQ(max_abs_diff(rec.values("loaded"), at_save), 0.0) << world << " ranks, rank " << r;
      // The optimizer state came back too: without it AdamW's next steps would differ.
      EXPECT_LT(max_abs_diff(rec.values("final"), expected), 1e-5) << world << " ranks, rank " << r;
    }
  }
}

TEST(ShardedCheckpoint, FsdpSavedAtFourRanksResumesAtTwoAndThree) {
  expect_resumes_at_other_world_sizes("fsdp", 0);
}

TEST(ShardedCheckpoint, DeepSpeedStage2SavedAtFourRanksResumesAtTwoAndThree) {
  expect_resumes_at_other_world_sizes("deepspeed", 2);
}

TEST(ShardedCheckpoint, DeepSpeedStage1SavedAtFourRanksResumesAtTwoAndThree) {
  expect_resumes_at_other_world_sizes("deepspeed", 1);
}

TEST(ShardedCheckpoint, DeepSpeedStage3SavedAtFourRanksResumesAtTwoAndThree) {
  expect_resumes_at_other_world_sizes("deepspeed", 3);
}

// A 4-rank fsdp checkpoint loads into a plain GPT and AdamW in this process, through a
// one-device Fabric (a consolidation),
// and one process training on from there ends where the 4 ranks ended.
TEST(ShardedCheckpoint, FsdpCheckpointLoadsIntoOneProcessAndContinues) {
  TempDir dir;
  const std::string path = dir.file("ckpt");
  Job saved = run_sharded("fsdp", 0, 4, "save", path);
  ASSERT_TRUE(saved.ok()) << saved.describe();
  manual_seed(kSeed + 5);
  auto model = std::make_shared<nn::GPT>(gpt_config());
  auto opt = adamw(model->parameters());
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(model)},
                        {"optimizer", std::shared_ptr<optim::Optimizer>(opt)},
                        {"step", int64_t(0)}};
  Fabric one({.accelerator = "cpu", .devices = 1});  // a plain Fabric takes the directory too
  one.load(path, state);
  EXPECT_EQ(max_abs_diff(flat(model->state_dict()), saved.rank(0).values("at_save")), 0.0);
  ASSERT_EQ(std::get<int64_t>(state.at("step")), 2);
  for (const Tensor& p : model->parameters()) {
    const optim::ParamState* st = opt->state(p);
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->step, 2);
    EXPECT_EQ(st->buffers.at("exp_avg").sizes(), p.sizes());
  }
  for (int s = 2; s < 4; ++s) {
    auto [x, y] = gpt_batch(s);
    gpt_loss(*model, x, y).backward();
    opt->step();
    opt->zero_grad();
  }
  EXPECT_LT(max_abs_diff(flat(model->state_dict()), saved.rank(0).values("final")), 1e-5);
}

// A refused load changes nothing on any rank, and every rank's error names the file at fault.
void expect_refused(const std::string& path, const std::vector<std::string>& names) {
  Job job = run_sharded("fsdp", 0, 2, "refuse", path);
  ASSERT_TRUE(job.ok()) << job.describe();
  for (int r = 0; r < 2; ++r) {
    RankRecord rec = job.rank(r);
    ASSERT_EQ(rec.value("done"), 1.0) << job.describe();
    for (const std::string& n : names) EXPECT_THAT(rec.text("error"), HasSubstr(n)) << "rank " << r;
    ASSERT_FALSE(rec.values("model_before").empty());
    EXPECT_EQ(rec.values("model_after"), rec.values("model_before")) << "rank " << r;
    ASSERT_FALSE(rec.values("optimizer_before").empty());
    EXPECT_EQ(rec.values("optimizer_after"), rec.values("optimizer_before")) << "rank " << r;
    EXPECT_EQ(rec.value("step_after"), 0.0) << "plain values are left as they were";
  }
}

TEST(ShardedCheckpoint, ARefusedLoadChangesNothingOnAnyRank) {
  TempDir dir;
  const std::string path = dir.file("ckpt");
  ASSERT_TRUE(run_sharded("fsdp", 0, 4, "save", path, 1, 0).ok());
  std::vector<std::string> files = listing(path);  // index.json, then rank 0's file, ...
  ASSERT_EQ(files.size(), 5u);
  // One flipped byte near the end of rank 3's file: inside the bytes of its last tensor.
  auto flip = [&] {
    std::fstream f(path + "/" + files[4], std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-6, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    c = char(c ^ 0x10);
    f.seekp(-6, std::ios::end);
    f.write(&c, 1);
  };
  flip();
  expect_refused(path, {"shard file '" + files[4] + "' of sharded checkpoint", "is corrupt: its"});
  flip();  // repaired
  fs::remove(path + "/" + files[2]);
  expect_refused(path,
                 {"shard file '" + files[2] + "' of sharded checkpoint '" + path + "' is missing"});
  fs::remove(path + "/index.json");
  expect_refused(path, {"has no index.json: it is not a complete sharded checkpoint"});
}

// A save that fails on one rank fails on every rank, removes the files it wrote, and leaves the
// previous checkpoint in place and loadable.
TEST(ShardedCheckpoint, ASaveFailingOnOneRankKeepsThePreviousCheckpoint) {
  TempDir dir;
  const std::string path = dir.file("ckpt");
  Job job = run_sharded("fsdp", 0, 2, "failed_save", path);
  ASSERT_TRUE(job.ok()) << job.describe();
  EXPECT_THAT(job.rank(1).text("error"), HasSubstr("save: 'extra' has no values"));
  EXPECT_THAT(job.rank(0).text("error"),
              HasSubstr("save: rank 1 failed, so no rank did: save: 'extra' has no values"));
  EXPECT_EQ(listing(path).size(), 3u) << ::testing::PrintToString(listing(path));
  for (int r = 0; r < 2; ++r) {
    ASSERT_FALSE(job.rank(r).values("at_save").empty());
    EXPECT_EQ(job.rank(r).values("loaded"), job.rank(r).values("at_save")) << "rank " << r;
  }
}

// In one process: the index names each tensor's global shape and pieces, a second save into the
// same directory replaces the first only once complete (the old shard files are then gone),
// and a state that does not match is refused naming the key, changing nothing.
TEST(ShardedCheckpoint, OneProcessIndexReplacementAndRefusals) {
  TempDir dir;
  const std::string path = dir.file("ckpt");
  manual_seed(1);
  auto model = std::make_shared<Mlp>();
  auto opt = adamw(model->parameters());
  auto [x, y] = mlp_batch(0);
  mse_loss((*model)(x), y).backward();
  opt->step();
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(model)},
                        {"optimizer", std::shared_ptr<optim::Optimizer>(opt)},
                        {"loss", 0.5},
                        {"nothing", zeros({0, 3})}};
  save_sharded_checkpoint(path, state, {});
  std::vector<std::string> first = listing(path);
  ASSERT_EQ(first.size(), 2u);
  std::string index = fabric_test::read_text(path + "/index.json");
  EXPECT_THAT(index, ::testing::StartsWith("{\"index_crc32c\":\""));
  EXPECT_THAT(index, HasSubstr("\"model.fc1.weight\":{\"dtype\":\"F32\",\"pieces\":[{\"crc32c\":"));
  EXPECT_THAT(index, HasSubstr("\"shape\":[17,5]"));
  EXPECT_THAT(index, HasSubstr("\"optimizer.state.model.fc2.bias.exp_avg_sq\""));
  // What a save killed mid-write leaves: the temp file of a shard file of its own token.
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string killed =
      atomic_temp_path(path + "/shard-00000-of-00001-00000000000000ab.safetensors", dead, 1);
  std::ofstream(killed) << "half a shard";
  ASSERT_TRUE(fs::exists(killed));
  save_sharded_checkpoint(path, state, {});
  std::vector<std::string> second = listing(path);  // the killed save's temp file is gone too
  ASSERT_EQ(second.size(), 2u);
  EXPECT_NE(second[1], first[1]) << "each save writes new shard files and drops the old";

  // A save that fails (here: an undefined tensor) leaves the previous checkpoint as it was.
  CheckpointState broken = state;
  broken["extra"] = Tensor();
  EXPECT_THAT(fabric_test::value_error_of([&] { save_sharded_checkpoint(path, broken, {}); }),
              HasSubstr("'extra' has no values"));
  EXPECT_EQ(listing(path), second);

  // Another model shape: refused naming the tensor, nothing changes.
  manual_seed(2);
  auto other = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(5, 16));
  CheckpointState same{{"model", std::shared_ptr<nn::Module>(model)}, {"loss", 0.0}};
  std::vector<double> before = flat(model->state_dict());
  auto opt2 = adamw(other->parameters());
  CheckpointState mismatch{{"model", std::shared_ptr<nn::Module>(other)},
                           {"optimizer", std::shared_ptr<optim::Optimizer>(opt2)}};
  std::vector<double> other_before = flat(other->state_dict());
  EXPECT_THAT(
      fabric_test::value_error_of([&] { load_sharded_checkpoint(path, mismatch, true, {}); }),
      HasSubstr("has no tensor '0.weight' for module 'model'"));
  EXPECT_EQ(flat(other->state_dict()), other_before);
  EXPECT_EQ(opt2->state_dict().state.size(), 0u);
  // The same names with other shapes: refused naming the tensor and both shapes.
  auto narrower = std::make_shared<Mlp>(16);
  auto opt3 = adamw(narrower->parameters());
  CheckpointState shapes{{"model", std::shared_ptr<nn::Module>(narrower)},
                         {"optimizer", std::shared_ptr<optim::Optimizer>(opt3)}};
  std::vector<double> narrower_before = flat(narrower->state_dict());
  EXPECT_THAT(fabric_test::value_error_of([&] { load_sharded_checkpoint(path, shapes, true, {}); }),
              HasSubstr("shape mismatch for 'model.fc1.weight' in sharded checkpoint '" + path +
                        "': the checkpoint has [17, 5], the state given to load() has [16, 5]"));
  EXPECT_EQ(flat(narrower->state_dict()), narrower_before);
  EXPECT_EQ(opt3->state_dict().state.size(), 0u);
  CheckpointState missing{{"model", std::shared_ptr<nn::Module>(model)}, {"epoch", int64_t(0)}};
  EXPECT_THAT(
      fabric_test::value_error_of([&] { load_sharded_checkpoint(path, missing, true, {}); }),
      HasSubstr("has no entry 'epoch'"));
  EXPECT_EQ(flat(model->state_dict()), before);
  // The same state loads; the plain values it did not ask for come back as the rest (a tensor
  // without elements too: the index holds it, no file does).
  CheckpointState rest = load_sharded_checkpoint(path, same, true, {});
  EXPECT_EQ(std::get<double>(same.at("loss")), 0.5);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(std::get<Tensor>(rest.at("nothing")).sizes(), (Shape{0, 3}));
  // A file where the directory should be is refused.
  std::ofstream(dir.file("file")) << "x";
  EXPECT_THAT(
      fabric_test::value_error_of([&] { save_sharded_checkpoint(dir.file("file"), state, {}); }),
      HasSubstr("is a file; a sharded checkpoint"));
  EXPECT_THAT(fabric_test::value_error_of(
                  [] { (void)FSDPStrategy(FSDPOptions{.state_dict_type = "dcp"}); }),
              HasSubstr("fsdp: state_dict_type='dcp' is invalid"));
  EXPECT_THAT(fabric_test::value_error_of(
                  [] { (void)DeepSpeedStrategy(DeepSpeedOptions{.state_dict_type = "x"}); }),
              HasSubstr("deepspeed: state_dict_type='x' is invalid"));
}

}  // namespace
}  // namespace loom::ddptest
