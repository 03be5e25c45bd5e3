// Tests for Fabric::save / Fabric::load (fabric/checkpoint.cpp): every kind of value, a
// training run continued from a checkpoint bit for bit, mismatches reported by name, what the
// file had beyond the state, strict=false, and refused files that change nothing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "fabric_test_util.h"
#include "optim/adam.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using namespace fabric_test;

TEST(Checkpoint, RoundTripsEveryKindOfValue) {
  TempDir dir;
  std::string path = dir / "all.safetensors";
  Fabric fabric(cpu_options());
  auto model = make_mlp(1);
  auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.1, optim::SGDOptions{.momentum = 0.9});
  auto sched = std::make_shared<optim::StepLR>(opt, 1, 0.5);
  auto [m, o] = fabric.setup(model, opt);
  fabric.backward((*m)(randn({3, 4})).sum());
  o->step();
  sched->step();
  Tensor t = arange(0.0, 6.0).view({2, 3});
  fabric.save(path, {{"model", m}, {"opt", o}, {"sched", sched}, {"step", int64_t(7)},
                     {"loss", 0.125}, {"name", std::string("run-1")}, {"t", t}});

  auto model2 = make_mlp(2);
  auto opt2 = std::make_shared<optim::SGD>(model2->parameters(), 0.3, optim::SGDOptions{.momentum = 0.9});
  auto sched2 = std::make_shared<optim::StepLR>(opt2, 1, 0.5);
  auto [m2, o2] = fabric.setup(model2, opt2);
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(m2)},
                        {"opt", std::shared_ptr<optim::Optimizer>(o2)},
                        {"sched", std::shared_ptr<optim::LRScheduler>(sched2)},
                        {"step", int64_t(0)},
                        {"loss", 0.0},
                        {"name", std::string()},
                        {"t", Tensor()}};
  CheckpointState rest = fabric.load(path, state);
  EXPECT_TRUE(rest.empty());
  EXPECT_EQ(snapshot(*model2), snapshot(*model));
  EXPECT_EQ(std::get<int64_t>(state["step"]), 7);
  EXPECT_EQ(std::get<double>(state["loss"]), 0.125);
  EXPECT_EQ(std::get<std::string>(state["name"]), "run-1");
  EXPECT_TRUE(std::get<Tensor>(state["t"]).equal(t));
  EXPECT_EQ(sched2->last_epoch(), 1);
  EXPECT_DOUBLE_EQ(opt2->lr(), 0.05);
  ASSERT_NE(opt2->state(model2->parameters()[0]), nullptr);
  EXPECT_TRUE(opt2->state(model2->parameters()[0])->buffers.at("momentum_buffer")
                  .equal(opt->state(model->parameters()[0])->buffers.at("momentum_buffer")));
}

// One training step on fixed data; returns the loss.
float train_step(Fabric& fabric, FabricModule& m, FabricOptimizer& o, optim::LRScheduler& s,
                 const Tensor& x, const Tensor& y) {
  o.zero_grad();
  Tensor loss = mse_loss(m(x), y);
  fabric.backward(loss);
  o.step();
  s.step();
  return loss.item<float>();
}

TEST(Checkpoint, ContinuesTrainingBitForBit) {
  TempDir dir;
  std::string path = dir / "resume.safetensors";
  manual_seed(99);
  Tensor x = randn({16, 4}), y = randn({16, 2});

  Fabric fabric(cpu_options());
  auto model = make_mlp(5);
  auto opt = std::make_shared<optim::AdamW>(model->parameters(), 1e-2);
  auto sched = std::make_shared<optim::StepLR>(opt, 3, 0.5);
  auto [m, o, s] = fabric.setup(model, opt, sched);
  for (int i = 0; i < 5; ++i) train_step(fabric, *m, *o, *s, x, y);
  fabric.save(path, {{"model", m}, {"optimizer", o}, {"scheduler", s}, {"iteration", int64_t(5)}});
  std::vector<float> expected;
  for (int i = 0; i < 5; ++i) expected.push_back(train_step(fabric, *m, *o, *s, x, y));

  Fabric fresh(cpu_options());
  auto model2 = make_mlp(6);  // other weights: the load must replace them all
  auto opt2 = std::make_shared<optim::AdamW>(model2->parameters(), 1e-2);
  auto sched2 = std::make_shared<optim::StepLR>(opt2, 3, 0.5);
  auto [m2, o2, s2] = fresh.setup(model2, opt2, sched2);
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(m2)},
                        {"optimizer", std::shared_ptr<optim::Optimizer>(o2)},
                        {"scheduler", std::shared_ptr<optim::LRScheduler>(s2)},
                        {"iteration", int64_t(0)}};
  fresh.load(path, state);
  EXPECT_EQ(std::get<int64_t>(state["iteration"]), 5);
  EXPECT_EQ(s2->last_epoch(), 5);
  std::vector<float> resumed;
  for (int i = 0; i < 5; ++i) resumed.push_back(train_step(fresh, *m2, *o2, *s2, x, y));
  EXPECT_EQ(resumed, expected) << "bitwise-equal losses after resuming";
  EXPECT_EQ(snapshot(*model2), snapshot(*model));
}

TEST(Checkpoint, ReportsMismatchesByName) {
  TempDir dir;
  std::string path = dir / "m.safetensors";
  Fabric fabric(cpu_options());
  auto m = fabric.setup(make_mlp());
  fabric.save(path, {{"model", m}, {"epoch", int64_t(3)}});

  auto expect_refused = [&](std::shared_ptr<nn::Module> target, const std::string& message) {
    auto before = snapshot(*target);
    CheckpointState state{{"model", target}};
    EXPECT_THAT([&] { fabric.load(path, state); }, ::testing::ThrowsMessage<ValueError>(HasSubstr(message)));
    EXPECT_EQ(snapshot(*target), before) << "a refused load changes nothing";
  };
  // Missing: the target has a third layer the file lacks.
  auto bigger = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 8), std::make_shared<nn::ReLU>(),
                                                 std::make_shared<nn::Linear>(8, 2), std::make_shared<nn::Linear>(2, 2));
  expect_refused(bigger, "load: 'model' misses key '3.weight'");
  // Unexpected: the target lacks the file's second layer.
  auto smaller = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 8));
  expect_refused(smaller, "load: unexpected key 'model.2.");
  // Shape.
  auto wider = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 9), std::make_shared<nn::ReLU>(),
                                                std::make_shared<nn::Linear>(9, 2));
  expect_refused(wider, "load: shape mismatch for 'model.0.weight'");
  // Dtype.
  auto f64 = make_mlp();
  f64->to(DType::f64);
  expect_refused(f64, "load: dtype mismatch for 'model.0.weight'");
  // An entry the file lacks, and a value of another kind under a key.
  CheckpointState absent{{"nothing", int64_t(0)}};
  EXPECT_THAT([&] { fabric.load(path, absent); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("has no entry 'nothing'; pass strict=false")));
  auto target = make_mlp(3);
  auto before = snapshot(*target);
  CheckpointState wrong_kind{{"model", std::shared_ptr<nn::Module>(target)}, {"epoch", std::string()}};
  EXPECT_THAT([&] { fabric.load(path, wrong_kind); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("entry 'epoch' of " + path + " is a int, but "
                                                             "the state given to load() holds a string")));
  EXPECT_EQ(snapshot(*target), before) << "checked before the module was loaded";
}

TEST(Checkpoint, RefusesAnOptimizerOfAnotherShapeBeforeChangingAnything) {
  TempDir dir;
  std::string path = dir / "o.safetensors";
  Fabric fabric(cpu_options());
  auto model = make_mlp(1);
  auto [m, o] = fabric.setup(model, std::make_shared<optim::SGD>(model->parameters(), 0.1));
  fabric.save(path, {{"a_model", m}, {"opt", o}});

  auto model2 = make_mlp(2);
  auto before = snapshot(*model2);
  auto half = std::make_shared<optim::SGD>(std::vector<Tensor>{model2->parameters()[0]}, 0.1);
  CheckpointState state{{"a_model", std::shared_ptr<nn::Module>(model2)},
                        {"opt", std::shared_ptr<optim::Optimizer>(half)}};
  EXPECT_THAT([&] { fabric.load(path, state); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("the optimizer 'opt'")));
  EXPECT_EQ(snapshot(*model2), before);
}

TEST(Checkpoint, ReturnsWhatItDidNotConsumeAndLoadsNonStrictly) {
  TempDir dir;
  std::string path = dir / "r.safetensors";
  Fabric fabric(cpu_options());
  auto m = fabric.setup(make_mlp(1));
  fabric.save(path, {{"model", m}, {"epoch", int64_t(4)}, {"best", 0.5}, {"tag", std::string("x")},
                     {"ema", ones({2})}});
  auto target = make_mlp(2);
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(target)}};
  CheckpointState rest = fabric.load(path, state);
  ASSERT_EQ(rest.size(), 4u);
  EXPECT_EQ(std::get<int64_t>(rest.at("epoch")), 4);
  EXPECT_EQ(std::get<double>(rest.at("best")), 0.5);
  EXPECT_EQ(std::get<std::string>(rest.at("tag")), "x");
  EXPECT_TRUE(std::get<Tensor>(rest.at("ema")).equal(ones({2})));
  EXPECT_EQ(snapshot(*target), snapshot(*m));

  // strict=false: a key the file lacks is skipped, a module with an extra layer loads the rest.
  auto bigger = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 8), std::make_shared<nn::ReLU>(),
                                                 std::make_shared<nn::Linear>(8, 2), std::make_shared<nn::Linear>(2, 2));
  Tensor extra_before = bigger->at<nn::Linear>(3)->weight.clone();
  CheckpointState loose{{"model", std::shared_ptr<nn::Module>(bigger)}, {"missing", int64_t(-1)}};
  fabric.load(path, loose, /*strict=*/false);
  EXPECT_EQ(std::get<int64_t>(loose["missing"]), -1) << "untouched";
  EXPECT_TRUE(bigger->at<nn::Linear>(0)->weight.equal(m->original<nn::Sequential>()->at<nn::Linear>(0)->weight));
  EXPECT_TRUE(bigger->at<nn::Linear>(3)->weight.equal(extra_before));
}

TEST(Checkpoint, RefusesTruncatedAndCorruptedFilesChangingNothing) {
  TempDir dir;
  std::string path = dir / "c.safetensors";
  Fabric fabric(cpu_options());
  auto m = fabric.setup(make_mlp(1));
  fabric.save(path, {{"model", m}, {"epoch", int64_t(2)}});
  auto size = std::filesystem::file_size(path);

  auto target = make_mlp(2);
  auto before = snapshot(*target);
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(target)}, {"epoch", int64_t(0)}};

  std::string truncated = dir / "truncated.safetensors";
  std::filesystem::copy_file(path, truncated);
  std::filesystem::resize_file(truncated, size - 16);
  EXPECT_THAT([&] { fabric.load(truncated, state); },
              ::testing::ThrowsMessage<Error>(HasSubstr("checkpoint '" + truncated + "'")));

  std::string corrupted = dir / "corrupted.safetensors";
  std::filesystem::copy_file(path, corrupted);
  {
    std::FILE* f = std::fopen(corrupted.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 8, SEEK_SET);  // the first byte of the JSON header
    std::fputc('#', f);
    std::fclose(f);
  }
  EXPECT_THAT([&] { fabric.load(corrupted, state); },
              ::testing::ThrowsMessage<Error>(HasSubstr("checkpoint '" + corrupted + "'")));
  EXPECT_THAT([&] { fabric.load(dir / "absent.safetensors", state); },
              ::testing::ThrowsMessage<RuntimeError>(HasSubstr("cannot open checkpoint")));

  EXPECT_EQ(snapshot(*target), before) << "nothing changed";
  EXPECT_EQ(std::get<int64_t>(state["epoch"]), 0);
  fabric.load(path, state);
  EXPECT_EQ(std::get<int64_t>(state["epoch"]), 2) << "the intact file still loads";
}

}  // namespace
}  // namespace loom
