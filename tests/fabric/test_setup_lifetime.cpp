// Fabric::setup must not own the models it sets up: once the caller drops a model and its
// optimizer, the parameters are freed, however many models one Fabric has set up.
#include <gtest/gtest.h>

#include "fabric/fabric.h"
#include "nn/nn.h"
#include "optim/sgd.h"

namespace loom {
namespace {

TEST(FabricSetup, DoesNotKeepDroppedModelsAlive) {
  Fabric fabric({.accelerator = "cpu", .strategy = "auto", .devices = 1});
  fabric.launch();
  std::weak_ptr<TensorImpl> first_weight;
  for (int i = 0; i < 3; ++i) {
    auto model = std::make_shared<nn::Linear>(4, 3);
    auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.1);
    if (i == 0) first_weight = model->weight.impl_ptr();
    auto [m, o] = fabric.setup(model, opt);
    EXPECT_EQ(m->parameters().size(), 2u);
  }
  EXPECT_TRUE(first_weight.expired());
  EXPECT_EQ(fabric.models_setup(), 3);
}

TEST(FabricSetup, ForeignOptimizerIsStillRejectedAfterEarlierModelsExpire) {
  Fabric fabric({.accelerator = "cpu", .strategy = "auto", .devices = 1});
  fabric.launch();
  { fabric.setup_module(std::make_shared<nn::Linear>(2, 2)); }
  auto model = std::make_shared<nn::Linear>(2, 2);
  auto fm = fabric.setup_module(model);
  auto other = std::make_shared<nn::Linear>(2, 2);
  auto opt = std::make_shared<optim::SGD>(other->parameters(), 0.1);
  EXPECT_THROW(fabric.setup_optimizers(opt), ValueError);
  auto own = std::make_shared<optim::SGD>(model->parameters(), 0.1);
  EXPECT_NO_THROW(fabric.setup_optimizers(own));
}

}  // namespace
}  // namespace loom
