// Tests for Fabric::setup and its two-step form (setup_module, setup_optimizers): the order
// of its steps, every validation with its exception and message, the return shapes, the
// foreign-optimizer check, parameter remapping when a move replaces parameter objects, and
// Fabric-aware modules.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fabric_test_util.h"
#include "optim/adam.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"

namespace loom {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace fabric_test;

std::shared_ptr<optim::SGD> sgd_for(const nn::Module& m, double lr = 0.1) {
  return std::make_shared<optim::SGD>(m.parameters(), lr);
}

TEST(Setup, ReturnShapes) {
  Fabric fabric(cpu_options());
  auto model = make_mlp();
  std::shared_ptr<FabricModule> m = fabric.setup(model);
  EXPECT_EQ(m->original_module(), model);

  auto model2 = make_mlp();
  auto opt2 = sgd_for(*model2);
  auto [m2, o2] = fabric.setup(model2, opt2);
  static_assert(std::is_same_v<decltype(o2), std::shared_ptr<FabricOptimizer>>);
  EXPECT_EQ(o2->optimizer(), opt2);

  auto model3 = make_mlp();
  auto a = sgd_for(*model3);
  auto b = std::make_shared<optim::Adam>(model3->parameters(), 1e-3);
  auto [m3, o3a, o3b] = fabric.setup(model3, a, b);
  EXPECT_EQ(o3a->optimizer(), a);
  EXPECT_EQ(o3b->optimizer(), b) << "optimizers come back in argument order";

  auto model4 = make_mlp();
  auto opt4 = sgd_for(*model4);
  auto sched = std::make_shared<optim::StepLR>(opt4, 2);
  auto [m4, o4, s4] = fabric.setup(model4, opt4, sched, SetupOptions{.move_to_device = false});
  static_assert(std::is_same_v<decltype(s4), std::shared_ptr<optim::StepLR>>);
  EXPECT_EQ(s4, sched);
  EXPECT_EQ(o4->optimizer(), opt4);

  auto model5 = make_mlp();
  auto m5 = fabric.setup(model5, SetupOptions{.reapply_compile = false});
  EXPECT_EQ(m5->original_module(), model5);
  EXPECT_EQ(fabric.models_setup(), 5);
}

// Records the order in which setup reaches the precision, the strategy and the callbacks.
struct Trace {
  std::vector<std::string> events;
};

class TracingPrecision : public TruePrecision {
 public:
  explicit TracingPrecision(Trace* t) : TruePrecision(DType::f32), trace_(t) {}
  void convert_module(nn::Module& m) const override {
    trace_->events.push_back("convert_module");
    TruePrecision::convert_module(m);
  }

 private:
  Trace* trace_;
};

class TracingStrategy : public SingleDeviceStrategy {
 public:
  explicit TracingStrategy(Trace* t) : trace_(t) {}
  void module_to_device(nn::Module& m) override {
    trace_->events.push_back("module_to_device");
    SingleDeviceStrategy::module_to_device(m);
  }
  std::shared_ptr<nn::Module> setup_module(std::shared_ptr<nn::Module> m) override {
    trace_->events.push_back("strategy.setup_module");
    return m;
  }
  std::shared_ptr<optim::Optimizer> setup_optimizer(std::shared_ptr<optim::Optimizer> opt) override {
    trace_->events.push_back("setup_optimizer");
    return opt;
  }

 private:
  Trace* trace_;
};

TEST(Setup, RunsItsStepsInOrder) {
  Trace trace;
  auto cb = std::make_shared<Callback>();
  cb->on("on_after_setup", [&](Fabric&, FabricModule&) { trace.events.push_back("on_after_setup"); });
  Fabric fabric({.accelerator = "cpu",
                 .devices = 1,
                 .plugins = {std::make_shared<TracingPrecision>(&trace),
                             std::make_shared<TracingStrategy>(&trace)},
                 .callbacks = {cb}});
  auto model = make_mlp();
  auto [m, o] = fabric.setup(model, sgd_for(*model));
  EXPECT_THAT(trace.events, ElementsAre("convert_module", "module_to_device", "strategy.setup_module",
                                        "setup_optimizer", "on_after_setup"));
  trace.events.clear();
  auto m2 = fabric.setup(make_mlp(), SetupOptions{.move_to_device = false});
  EXPECT_THAT(trace.events, ElementsAre("convert_module", "strategy.setup_module", "on_after_setup"))
      << "move_to_device=false skips the move";
}

TEST(Setup, RefusesWhatWasAlreadySetUp) {
  Fabric fabric(cpu_options());
  auto model = make_mlp();
  auto [m, o] = fabric.setup(model, sgd_for(*model));
  try {
    fabric.setup(m);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("setup: the module is already a FabricModule (set up once)"));
  }
  try {
    fabric.setup(make_mlp(), o);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("setup: an optimizer is already a FabricOptimizer (set up once)"));
  }
  try {
    fabric.setup_optimizers(o);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("setup_optimizers: the optimizer is already a FabricOptimizer"));
  }
  EXPECT_THROW(fabric.setup(std::shared_ptr<nn::Module>()), ValueError);
  EXPECT_EQ(fabric.models_setup(), 1) << "refused set-ups are not counted";
}

TEST(Setup, RefusesBeforeLaunchWhenTheStrategyNeedsProcesses) {
  Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2});
  auto model = make_mlp();
  try {
    fabric.setup(model, sgd_for(*model));
    FAIL();
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("setup: the 'ddp' strategy runs in several processes; call "
                                    "fabric.launch() first"));
  }
  EXPECT_THROW(fabric.setup_module(model), RuntimeError);
  EXPECT_THROW(fabric.setup_optimizers(sgd_for(*model)), RuntimeError);
  EXPECT_EQ(fabric.models_setup(), 0);
}

TEST(Setup, RefusesAnOptimizerOfAnotherModel) {
  Fabric fabric(cpu_options());
  auto model = make_mlp(), other = make_mlp();
  auto foreign = sgd_for(*other);
  try {
    fabric.setup(model, foreign);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("setup: 4 of the optimizer's 4 parameters do not belong to any "
                                    "module set up by this Fabric"));
    EXPECT_THAT(e.what(), HasSubstr("call setup_module() first and build the optimizer from the "
                                    "returned module's parameters, then setup_optimizers()"));
  }
  EXPECT_EQ(fabric.models_setup(), 0) << "the refusal comes before the module is set up";

  // Half foreign: one group from the model, one from elsewhere.
  auto mixed = std::make_shared<optim::SGD>(
      std::vector<optim::ParamGroup>{model->parameters(), other->parameters()}, optim::SGDOptions{.lr = 0.1});
  EXPECT_THAT([&] { fabric.setup(model, mixed); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("4 of the optimizer's 8 parameters")));
}

TEST(Setup, TwoStepSetupValidatesTheSame) {
  Fabric fabric(cpu_options());
  auto model = make_mlp();
  auto m = fabric.setup_module(model);
  EXPECT_EQ(fabric.models_setup(), 1);
  auto opt = fabric.setup_optimizers(sgd_for(*m));
  static_assert(std::is_same_v<decltype(opt), std::shared_ptr<FabricOptimizer>>);
  auto [a, b] = fabric.setup_optimizers(sgd_for(*m), std::make_shared<optim::Adam>(m->parameters(), 1e-3));
  EXPECT_EQ(a->optimizer()->name(), "SGD");
  EXPECT_EQ(b->optimizer()->name(), "Adam");
  EXPECT_THAT([&] { fabric.setup_optimizers(sgd_for(*make_mlp())); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("4 of the optimizer's 4 parameters do not belong")));
  EXPECT_EQ(fabric.models_setup(), 1);
}

TEST(Setup, TheSchedulerMustDriveOneOfTheOptimizers) {
  Fabric fabric(cpu_options());
  auto model = make_mlp();
  auto opt = sgd_for(*model);
  auto other_sched = std::make_shared<optim::StepLR>(sgd_for(*model), 2);
  EXPECT_THAT([&] { fabric.setup(model, opt, other_sched); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("the scheduler does not drive any of the optimizers")));
  EXPECT_THAT([&] { fabric.setup(model, opt, SetupOptions{.scheduler = other_sched}); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("the scheduler does not drive any of the optimizers")));
  EXPECT_EQ(fabric.models_setup(), 0);

  auto sched = std::make_shared<optim::StepLR>(opt, 1, 0.5);
  auto [m, o] = fabric.setup(model, opt, SetupOptions{.scheduler = sched});
  sched->step();
  EXPECT_DOUBLE_EQ(o->lr(), 0.05) << "the scheduler drives the wrapped optimizer's groups";
}

// A module whose parameter handle is looked up by name at every forward, so it follows a
// replace_parameter.
struct Scale : nn::Module {
  Scale() { register_parameter("w", full({2}, 3.0)); }
  Tensor forward(const Tensor& x) override { return x * named_parameters().at("w"); }
};

// A strategy whose move cannot keep parameter identity: it replaces every handle.
class ReplacingStrategy : public SingleDeviceStrategy {
 public:
  void module_to_device(nn::Module& module) override {
    for (const auto& [name, mod] : module.named_modules())
      for (const auto& [n, p] : mod->named_parameters(false))
        mod->replace_parameter(n, nn::Parameter(p.detach().clone()));
  }
};

TEST(Setup, RemapsOptimizerParametersWhenTheMoveReplacesThem) {
  Fabric fabric({.accelerator = "cpu", .devices = 1, .plugins = {std::make_shared<ReplacingStrategy>()}});
  auto model = std::make_shared<Scale>();
  Tensor old = model->named_parameters().at("w");
  auto opt = sgd_for(*model, 0.5);
  auto [m, o] = fabric.setup(model, opt);
  Tensor now = m->named_parameters().at("w");
  ASSERT_FALSE(now.is_same(old)) << "the strategy replaced the handle";
  EXPECT_TRUE(opt->param_groups()[0].params[0].is_same(now)) << "the optimizer follows";

  fabric.backward((*m)(ones({2})).sum());  // d/dw sum(x * w) = x = 1
  o->step();
  EXPECT_EQ(now.to_double_vector(), (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(old.to_double_vector(), (std::vector<double>{3.0, 3.0})) << "the old handle is dead";
}

// A Fabric-aware module: gets its Fabric and optimizers at setup and becomes a callback.
struct AwareNet : nn::Module, FabricAware {
  int hook_calls = 0;
  AwareNet() {
    register_module("fc", std::make_shared<nn::Linear>(2, 2));
    on("on_epoch_end", [this](int64_t) { ++hook_calls; });
  }
  Tensor forward(const Tensor& x) override { return (*children()[0])(x); }
};

TEST(Setup, FabricAwareModulesGetTheirFabricAndBecomeCallbacks) {
  Fabric fabric(cpu_options());
  auto net = std::make_shared<AwareNet>();
  auto [m, o] = fabric.setup(net, sgd_for(*net));
  EXPECT_EQ(net->fabric, &fabric);
  ASSERT_EQ(net->fabric_optimizers.size(), 1u);
  EXPECT_EQ(net->fabric_optimizers[0], o);
  ASSERT_EQ(fabric.callbacks().size(), 1u);
  fabric.call("on_epoch_end", 3);
  EXPECT_EQ(net->hook_calls, 1);

  // Already among the callbacks: not added twice.
  auto net2 = std::make_shared<AwareNet>();
  Fabric with_cb({.accelerator = "cpu", .devices = 1, .callbacks = {net2}});
  with_cb.setup(net2);
  EXPECT_EQ(with_cb.callbacks().size(), 1u);
  EXPECT_EQ(net2->fabric, &with_cb);
  EXPECT_TRUE(net2->fabric_optimizers.empty());
  with_cb.call("on_epoch_end", int64_t(1));
  EXPECT_EQ(net2->hook_calls, 1);

  // Compiled, it is still recognised.
  auto net3 = std::make_shared<AwareNet>();
  auto m3 = fabric.setup(compile(net3));
  EXPECT_EQ(net3->fabric, &fabric);
  EXPECT_EQ(fabric.callbacks().size(), 2u);
}

}  // namespace
}  // namespace loom
