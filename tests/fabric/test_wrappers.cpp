// Tests for what setup returns (fabric/wrappers.cpp): FabricModule (both modules kept,
// unprefixed state, forward through the precision), FabricOptimizer (an optim::Optimizer over
// the wrapped one's groups and state) and FabricDataLoader (batches on the device, sampler
// untouched on one process).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "data/dataloader.h"
#include "data/dataset.h"
#include "fabric_test_util.h"
#include "optim/adam.h"
#include "optim/sgd.h"

namespace loom {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace fabric_test;

TEST(FabricModule, KeepsBothModulesAndPresentsTheOriginalUnprefixed) {
  Fabric fabric(cpu_options());
  auto model = make_mlp();
  auto m = fabric.setup(model);
  EXPECT_EQ(m->original_module(), model);
  EXPECT_EQ(m->forward_module(), model) << "single device wraps nothing";
  EXPECT_EQ(m->original<nn::Sequential>(), model);
  EXPECT_EQ(m->original<nn::Sequential>()->at<nn::Linear>(0)->out_features, 8);
  EXPECT_THAT([&] { m->original<nn::Linear>(); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("the original module is a Sequential, "
                                                             "not the requested type")));
  EXPECT_EQ(m->name(), "FabricModule(Sequential)");

  auto names = m->named_parameters().keys();
  EXPECT_THAT(names, ElementsAre("0.weight", "0.bias", "2.weight", "2.bias"));
  for (const auto& [n, p] : m->named_parameters())
    EXPECT_TRUE(p.is_same(model->named_parameters().at(n))) << n;
  EXPECT_EQ(m->state_dict().keys(), model->state_dict().keys());

  // load_state_dict reaches the original's parameters in place.
  auto donor = make_mlp(7);
  auto res = m->load_state_dict(donor->state_dict());
  EXPECT_TRUE(res.missing_keys.empty());
  EXPECT_EQ(snapshot(*model), snapshot(*donor));

  m->eval();
  EXPECT_FALSE(model->is_training());
  EXPECT_FALSE(model->at<nn::Linear>(0)->is_training());
  m->train();
  EXPECT_TRUE(model->is_training());

  Tensor x = randn({5, 4});
  EXPECT_TRUE((*m)(x).equal((*model)(x))) << "32-true forward is the model's forward";
}

TEST(FabricOptimizer, StepsThroughTheStrategyAndSharesTheWrappedState) {
  Fabric fabric(cpu_options());
  auto model = make_mlp();
  auto adam = std::make_shared<optim::Adam>(model->parameters(), 1e-2);
  auto [m, opt] = fabric.setup(model, adam);
  static_assert(std::is_base_of_v<optim::Optimizer, FabricOptimizer>);
  optim::Optimizer& as_base = *opt;
  EXPECT_EQ(&as_base.param_groups(), &adam->param_groups()) << "the wrapped groups themselves";
  EXPECT_EQ(opt->optimizer(), adam);
  EXPECT_EQ(opt->num_params(), 4);

  auto before = snapshot(*model);
  Tensor x = randn({6, 4}), y = randn({6, 2});
  fabric.backward(mse_loss((*m)(x), y));
  EXPECT_TRUE(model->parameters()[0].grad().defined());
  as_base.step();
  EXPECT_FALSE(opt->last_step_skipped());
  EXPECT_NE(snapshot(*model), before);
  ASSERT_NE(opt->state(model->parameters()[0]), nullptr) << "state() reads the wrapped state";
  EXPECT_EQ(opt->state(model->parameters()[0])->step, 1);
  EXPECT_EQ(opt->state_dict().state.size(), adam->state_dict().state.size());
  EXPECT_EQ(opt->state_dict().state.at(0).step, 1);

  as_base.zero_grad();
  EXPECT_FALSE(model->parameters()[0].grad().defined());

  as_base.set_lr(0.5);
  EXPECT_EQ(adam->lr(), 0.5);
  EXPECT_EQ(opt->lr(), 0.5);

  // A group added through the wrapper is trained by the wrapped optimizer.
  Tensor extra = nn::Parameter(ones({1}));
  opt->add_param_group(optim::ParamGroup({extra}));
  EXPECT_EQ(adam->param_groups().size(), 2u);
  EXPECT_EQ(opt->num_params(), 5);
}

TEST(FabricDataLoader, MovesBatchesAndKeepsTheSamplerOnOneProcess) {
  Fabric fabric(cpu_options());
  auto ds = std::make_shared<data::TensorDataset>(
      std::vector<Tensor>{arange(0.0, 10.0).view({10, 1}), arange(0.0, 10.0)});
  auto loader = std::make_shared<data::DataLoader>(ds, data::DataLoaderOptions{.batch_size = 4});
  auto sampler = loader->sampler();
  auto wrapped = fabric.setup_dataloaders(loader);
  static_assert(std::is_same_v<decltype(wrapped), std::shared_ptr<FabricDataLoader>>);
  EXPECT_EQ(wrapped->loader(), loader) << "one process: no distributed sampler";
  EXPECT_EQ(wrapped->loader()->sampler(), sampler);
  EXPECT_EQ(wrapped->device(), fabric.device());
  EXPECT_EQ(wrapped->size(), 3);
  std::vector<double> seen;
  for (auto& batch : *wrapped) {
    ASSERT_EQ(batch.size(), 2u);
    EXPECT_EQ(batch[0].device(), fabric.device());
    for (double v : batch[1].to_double_vector()) seen.push_back(v);
  }
  EXPECT_EQ(seen, (std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));

  auto other = std::make_shared<data::DataLoader>(ds, data::DataLoaderOptions{.batch_size = 5});
  auto [a, b] = fabric.setup_dataloaders(loader, other);
  EXPECT_EQ(a->size(), 3);
  EXPECT_EQ(b->size(), 2);
  EXPECT_THROW(fabric.setup_dataloaders(std::shared_ptr<data::DataLoader>()), ValueError);
}

}  // namespace
}  // namespace loom
