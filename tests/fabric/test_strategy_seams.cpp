// The Strategy seams that sharding strategies plug into (fabric/strategy.h): parameters a
// strategy replaces in setup_module are remapped in the optimizers, setup_optimizer may
// return the optimizer that Fabric steps, save/load and clip_gradients' norm go through the
// strategy, an optimizer over meta parameters or built before a sharding setup is refused,
// and unwrap<> finds a wrapper through any chain of wrappers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "fabric/compile.h"
#include "fabric/wrapper_module.h"
#include "fabric_test_util.h"
#include "optim/sgd.h"
#include "tensor/defaults.h"
#include "tensor/factories.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using namespace fabric_test;

struct Scale : nn::Module {
  Scale() { register_parameter("w", full({2}, 3.0)); }
  Tensor forward(const Tensor& x) override { return x * named_parameters().at("w"); }
};

// Replaces every parameter handle in setup_module (as a strategy that re-lays parameters out
// one for one would), records what Fabric routes through it, and pretends its norm parts
// come from 4 equal shards.
class SeamStrategy : public SingleDeviceStrategy {
 public:
  std::vector<std::string> events;
  std::shared_ptr<optim::Optimizer> replacement;
  bool sharded = false;

  std::shared_ptr<nn::Module> setup_module(std::shared_ptr<nn::Module> module) override {
    for (const auto& [name, mod] : module->named_modules())
      for (const auto& [n, p] : mod->named_parameters(false))
        mod->replace_parameter(n, nn::Parameter(p.detach().clone()));
    return module;
  }
  bool optimizer_needs_setup_module_first() const override { return sharded; }
  std::shared_ptr<optim::Optimizer> setup_optimizer(std::shared_ptr<optim::Optimizer> opt) override {
    return replacement ? replacement : opt;
  }
  double reduce_norm_part(double part, bool inf_norm) override {
    events.push_back(inf_norm ? "norm_max" : "norm_sum");
    return inf_norm ? part : 4.0 * part;
  }
  void save_checkpoint(const std::string& path, const CheckpointState& state) override {
    events.push_back("save");
    SingleDeviceStrategy::save_checkpoint(path, state);
  }
  CheckpointState load_checkpoint(const std::string& path, CheckpointState& state,
                                  bool strict) override {
    events.push_back("load");
    return SingleDeviceStrategy::load_checkpoint(path, state, strict);
  }
};

FabricOptions with(const std::shared_ptr<SeamStrategy>& s) {
  return {.accelerator = "cpu", .devices = 1, .plugins = {s}};
}

TEST(StrategySeams, OptimizerFollowsParametersTheStrategyReplacedInSetupModule) {
  auto strategy = std::make_shared<SeamStrategy>();
  Fabric fabric(with(strategy));
  auto model = std::make_shared<Scale>();
  Tensor old = model->named_parameters().at("w");
  auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.5);
  auto [m, o] = fabric.setup(model, opt);
  Tensor now = m->named_parameters().at("w");
  ASSERT_FALSE(now.is_same(old)) << "the strategy replaced the handle";
  EXPECT_TRUE(opt->param_groups()[0].params[0].is_same(now)) << "the optimizer follows";
  fabric.backward((*m)(ones({2})).sum());
  o->step();
  EXPECT_EQ(now.to_double_vector(), (std::vector<double>{2.5, 2.5}));
}

TEST(StrategySeams, FabricStepsTheOptimizerTheStrategyReturns) {
  auto strategy = std::make_shared<SeamStrategy>();
  Fabric fabric(with(strategy));
  auto m = fabric.setup_module(std::make_shared<Scale>());
  auto given = std::make_shared<optim::SGD>(m->parameters(), 0.5);
  strategy->replacement = std::make_shared<optim::SGD>(m->parameters(), 0.25);
  auto o = fabric.setup_optimizers(given);
  EXPECT_EQ(o->optimizer(), strategy->replacement);
  fabric.backward((*m)(ones({2})).sum());
  o->step();
  EXPECT_EQ(m->named_parameters().at("w").to_double_vector(), (std::vector<double>{2.75, 2.75}))
      << "the replacement's lr (0.25) was used";
}

TEST(StrategySeams, ShardingStrategiesRefuseAnOptimizerBuiltBeforeSetup) {
  auto strategy = std::make_shared<SeamStrategy>();
  strategy->sharded = true;
  Fabric fabric(with(strategy));
  auto model = std::make_shared<Scale>();
  auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.5);
  try {
    fabric.setup(model, opt);
    FAIL() << "expected RuntimeError";
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Call fabric.setup_module(model) first, build the optimizer "
                                    "from the returned module's parameters()"));
  }
  EXPECT_EQ(fabric.models_setup(), 0);
  auto m = fabric.setup_module(model);  // the documented order works
  EXPECT_NO_THROW(fabric.setup_optimizers(std::make_shared<optim::SGD>(m->parameters(), 0.5)));
}

TEST(StrategySeams, AnOptimizerOverMetaParametersIsRefused) {
  Fabric fabric(cpu_options());
  std::shared_ptr<Scale> model;
  {
    DefaultDeviceGuard meta(Device::meta());
    model = std::make_shared<Scale>();
  }
  auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.5);
  try {
    fabric.setup(model, opt);
    FAIL() << "expected RuntimeError";
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("1 of the optimizer's 1 parameters are on the meta device"));
    EXPECT_THAT(e.what(), HasSubstr("fabric.setup_module(model) first"));
  }
}

TEST(StrategySeams, SaveLoadAndTheGradientNormGoThroughTheStrategy) {
  auto strategy = std::make_shared<SeamStrategy>();
  Fabric fabric(with(strategy));
  auto m = fabric.setup_module(std::make_shared<Scale>());
  auto o = fabric.setup_optimizers(std::make_shared<optim::SGD>(m->parameters(), 0.5));
  fabric.backward((*m)(full({2}, 3.0)).sum());  // grad = (3, 3): local norm^2 = 18
  Tensor norm = fabric.clip_gradients(*m, *o, /*max_norm=*/1e9);
  EXPECT_NEAR(norm.item<double>(), std::sqrt(4.0 * 18.0), 1e-5) << "the strategy's sum was used";
  fabric.clip_gradients(*m, *o, ClipOptions{.max_norm = 1e9, .norm_type = INFINITY});

  TempDir dir;
  fabric.save(dir / "c.safetensors", {{"model", std::shared_ptr<nn::Module>(m)}});
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(m)}};
  fabric.load(dir / "c.safetensors", state);
  EXPECT_EQ(strategy->events,
            (std::vector<std::string>{"norm_sum", "norm_max", "save", "load"}));
}

TEST(StrategySeams, UnwrapFindsAWrapperThroughAnyChain) {
  auto inner = std::make_shared<Scale>();
  auto compiled = compile(inner);
  FabricModule fm(compiled, inner, nullptr);
  EXPECT_EQ(unwrap<CompiledModule>(&fm), compiled.get());
  EXPECT_EQ(unwrap<Scale>(&fm), inner.get());
  EXPECT_EQ(unwrap<FabricModule>(compiled.get()), nullptr);
  EXPECT_EQ(fm.named_parameters().keys(), inner->named_parameters().keys()) << "no prefix";
}

}  // namespace
}  // namespace loom
