// Tests for Fabric's training helpers on one process (fabric.cpp): backward, clip_gradients
// against hand-computed norms, no_backward_sync, to_device, seed_everything, the rank
// accessors, print, logging to every logger, and compiled modules through setup.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <sstream>

#include "fabric/loggers/csv_logger.h"
#include "fabric/loggers/tensorboard_logger.h"
#include "fabric_test_util.h"
#include "optim/sgd.h"

namespace loom {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace fabric_test;

TEST(Fabric, BackwardFillsGradients) {
  Fabric fabric(cpu_options());
  auto lin = std::make_shared<nn::Linear>(2, 1, false);
  auto m = fabric.setup(lin);
  fabric.backward((*m)(tensor({3.0, -1.0}).view({1, 2})).sum());
  EXPECT_EQ(lin->weight.grad().to_double_vector(), (std::vector<double>{3.0, -1.0}));
  EXPECT_THROW(fabric.backward(Tensor()), ValueError);
}

// Linear(3, 2) with gradients set by hand: weight [[1, -2, 3], [0, 4, -1]], bias [2, -2].
struct ClipFixture {
  Fabric fabric{cpu_options()};
  std::shared_ptr<nn::Linear> lin = std::make_shared<nn::Linear>(3, 2);
  std::shared_ptr<FabricModule> m;
  std::shared_ptr<FabricOptimizer> opt;
  ClipFixture() {
    auto [fm, fo] = fabric.setup(lin, std::make_shared<optim::SGD>(lin->parameters(), 0.1));
    m = fm;
    opt = fo;
    lin->weight.set_grad(tensor({1.0, -2.0, 3.0, 0.0, 4.0, -1.0}).view({2, 3}));
    lin->bias.set_grad(tensor({2.0, -2.0}));
  }
  std::vector<double> grads() const {
    auto w = lin->weight.grad().to_double_vector(), b = lin->bias.grad().to_double_vector();
    w.insert(w.end(), b.begin(), b.end());
    return w;
  }
};

const std::vector<double> kGrads{1, -2, 3, 0, 4, -1, 2, -2};

TEST(ClipGradients, TwoNormIsTheTotalOverAllParameters) {
  ClipFixture f;
  double sq = 0;
  for (double g : kGrads) sq += g * g;  // 39
  double total = std::sqrt(sq);
  Tensor norm = f.fabric.clip_gradients(*f.m, *f.opt, /*max_norm=*/1.0);
  EXPECT_NEAR(norm.item<double>(), total, 1e-6);
  double coef = 1.0 / (total + 1e-6);
  auto clipped = f.grads();
  for (size_t i = 0; i < kGrads.size(); ++i) EXPECT_NEAR(clipped[i], kGrads[i] * coef, 1e-6) << i;
  double after = 0;
  for (double g : clipped) after += g * g;
  EXPECT_NEAR(std::sqrt(after), 1.0, 1e-5);
}

TEST(ClipGradients, BelowTheLimitNothingChanges) {
  ClipFixture f;
  Tensor norm = f.fabric.clip_gradients(*f.m, *f.opt, /*max_norm=*/100.0);
  EXPECT_NEAR(norm.item<double>(), std::sqrt(39.0), 1e-6);
  EXPECT_EQ(f.grads(), kGrads);
}

TEST(ClipGradients, OneAndInfinityNorms) {
  ClipFixture one;
  EXPECT_NEAR(one.fabric.clip_gradients(*one.m, *one.opt, 100.0, 1.0).item<double>(), 15.0, 1e-6);
  ClipFixture inf;
  Tensor n = inf.fabric.clip_gradients(*inf.m, *inf.opt, 2.0, INFINITY);
  EXPECT_NEAR(n.item<double>(), 4.0, 1e-6) << "max |g|";
  auto clipped = inf.grads();
  for (size_t i = 0; i < kGrads.size(); ++i) EXPECT_NEAR(clipped[i], kGrads[i] * 2.0 / (4.0 + 1e-6), 1e-6);
}

TEST(ClipGradients, ClipValueClampsEachGradient) {
  ClipFixture f;
  Tensor r = f.fabric.clip_gradients(*f.m, *f.opt, ClipOptions{.clip_val = 1.5});
  EXPECT_FALSE(r.defined());
  EXPECT_EQ(f.grads(), (std::vector<double>{1, -1.5, 1.5, 0, 1.5, -1, 1.5, -1.5}));
}

TEST(ClipGradients, RefusesAmbiguousOptionsAndNonFiniteNorms) {
  ClipFixture f;
  EXPECT_THAT([&] { f.fabric.clip_gradients(*f.m, *f.opt, ClipOptions{}); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("pass exactly one of max_norm and clip_val")));
  EXPECT_THAT([&] { f.fabric.clip_gradients(*f.m, *f.opt, ClipOptions{.max_norm = 1, .clip_val = 1}); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("pass exactly one of max_norm and clip_val")));
  f.lin->bias.set_grad(tensor({NAN, 0.0}));
  EXPECT_THAT([&] { f.fabric.clip_gradients(*f.m, *f.opt, 1.0); },
              ::testing::ThrowsMessage<RuntimeError>(HasSubstr("Pass error_if_nonfinite=false")));
  Tensor n = f.fabric.clip_gradients(*f.m, *f.opt, ClipOptions{.max_norm = 1.0, .error_if_nonfinite = false});
  EXPECT_TRUE(std::isnan(n.item<double>()));
}

TEST(Fabric, NoBackwardSyncAcceptsOnlyTheFabricModule) {
  Fabric fabric(cpu_options());
  auto model = make_mlp();
  auto m = fabric.setup(model);
  {
    auto ctx = fabric.no_backward_sync(*m);
    EXPECT_EQ(ctx.size(), 0u) << "nothing to skip on one process";
    fabric.backward((*m)(randn({2, 4})).sum());
  }
  EXPECT_TRUE(model->parameters()[0].grad().defined());
  for (bool enabled : {true, false})
    EXPECT_THAT([&] { fabric.no_backward_sync(*model, enabled); },
                ::testing::ThrowsMessage<ValueError>(
                    HasSubstr("no_backward_sync: pass the module returned by setup() (a FabricModule)")));
}

TEST(Fabric, ToDeviceSeedAndRanks) {
  Fabric fabric(cpu_options());
  Tensor x = randn({3});
  EXPECT_TRUE(fabric.to_device(x).equal(x));
  EXPECT_EQ(fabric.to_device(x).device(), fabric.device());
  data::Batch batch = fabric.to_device(data::Batch{x, ones({2})});
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_TRUE(batch[1].equal(ones({2})));

  EXPECT_EQ(fabric.seed_everything(1234), 1234u) << "rank 0 gets exactly the seed";
  Tensor a = randn({5});
  manual_seed(1234);
  EXPECT_TRUE(randn({5}).equal(a));

  EXPECT_EQ(fabric.global_rank(), 0);
  EXPECT_EQ(fabric.local_rank(), 0);
  EXPECT_EQ(fabric.node_rank(), 0);
  EXPECT_EQ(fabric.world_size(), 1);
  EXPECT_TRUE(fabric.is_global_zero());
  EXPECT_EQ(fabric.device(), Device::cpu());
  EXPECT_EQ(fabric.all_reduce(2.5), 2.5) << "collectives are the identity on one process";
  EXPECT_EQ(fabric.all_gather(x).sizes(), (Shape{1, 3}));
  EXPECT_NO_THROW(fabric.barrier());
}

TEST(Fabric, PrintWritesOnRankZero) {
  Fabric fabric(cpu_options());
  std::ostringstream captured;
  std::streambuf* old = std::cout.rdbuf(captured.rdbuf());
  fabric.print("loss ", 1.5, " at step ", 3);
  std::cout.rdbuf(old);
  EXPECT_EQ(captured.str(), "loss 1.5 at step 3\n");
}

TEST(Fabric, LogGoesToEveryLogger) {
  TempDir dir;
  auto csv = std::make_shared<CSVLogger>(dir.str(), "csv");
  auto tb = std::make_shared<TensorBoardLogger>(dir.str(), "tb");
  Fabric fabric({.accelerator = "cpu", .devices = 1, .loggers = {csv, tb}});
  EXPECT_EQ(fabric.logger(), csv);
  EXPECT_EQ(fabric.loggers().size(), 2u);
  fabric.log("loss", 0.5, 1);
  fabric.log_dict({{"loss", 0.25}, {"acc", 0.75}}, 2);
  std::string event_file = tb->event_file_path();
  ASSERT_FALSE(event_file.empty()) << "the TensorBoard logger received the metrics";
  csv->finalize();
  tb->finalize();
  EXPECT_THAT(lines_of(read_text(csv->metrics_path())),
              ElementsAre("step,loss,acc", "1,0.5,", "2,0.25,0.75"));
  // The event file holds the scalars' tags (protobuf stores strings as they are).
  std::string events = read_text(event_file);
  EXPECT_NE(events.find("loss"), std::string::npos);
  EXPECT_NE(events.find("acc"), std::string::npos);
}

TEST(Compile, SetupReappliesTheCompileOptions) {
  Fabric fabric(cpu_options());
  auto model = make_mlp();
  auto compiled = compile(model, {.mode = "max-autotune", .fullgraph = true});
  auto m = fabric.setup(compiled);
  auto* again = dynamic_cast<CompiledModule*>(m->forward_module().get());
  ASSERT_NE(again, nullptr) << "reapply_compile=true compiles the strategy-wrapped module again";
  EXPECT_NE(again, compiled.get());
  EXPECT_EQ(again->options().mode, "max-autotune");
  EXPECT_TRUE(again->options().fullgraph);
  EXPECT_EQ(again->inner(), model) << "the strategy was applied to the inner module";
  EXPECT_EQ(m->original_module(), compiled) << "the module given to setup";
  EXPECT_EQ(m->state_dict().keys(), model->state_dict().keys()) << "no compile prefix";
  Tensor x = randn({2, 4});
  EXPECT_TRUE((*m)(x).equal((*model)(x)));

  auto model2 = make_mlp();
  auto m2 = fabric.setup(compile(model2), SetupOptions{.reapply_compile = false});
  EXPECT_EQ(m2->forward_module(), model2) << "reapply_compile=false: left uncompiled";
  EXPECT_EQ(dynamic_cast<CompiledModule*>(m2->forward_module().get()), nullptr);

  EXPECT_THAT([&] { compile(compiled); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("the module is already compiled")));
}

}  // namespace
}  // namespace loom
