// docs/design.md "Contract sketch", compiled and run as written: the shapes outside code
// relies on.
#include <gtest/gtest.h>

#include "loom.h"

using namespace loom;

namespace {

struct Net : nn::Module {  // a user module
  std::shared_ptr<nn::Linear> fc;
  Tensor scale;
  Net() {
    fc = register_module("fc", std::make_shared<nn::Linear>(4, 2));
    scale = register_parameter("scale", ones({2}));  // returns the registered parameter
  }
  Tensor forward(const Tensor& x) override { return (*fc)(x).relu() * scale; }
};

TEST(Contract, SketchRunsAsWritten) {
  manual_seed(0);
  Tensor x = randn({8, 4});              // default dtype f32, default device
  Tensor t = zeros({2, 3}, DType::f64);  // factories take a shape, then optional dtype/device
  float v = x.sum().item<float>();
  EXPECT_EQ(x.dtype(), DType::f32);
  EXPECT_EQ(t.dtype(), DType::f64);
  EXPECT_NEAR(v, double(x.to(DType::f64).sum().item<double>()), 1e-4);

  auto model = std::make_shared<nn::Linear>(4, 2);  // modules live in std::shared_ptr
  Tensor y = (*model)(x);                           // one tensor in, one out: call operator
  EXPECT_EQ(y.sizes(), (Shape{8, 2}));
  auto opt = std::make_shared<optim::SGD>(model->parameters(), /*lr=*/0.1);

  Fabric fabric(FabricOptions{.accelerator = "cpu", .devices = 1, .precision = "32-true"});
  fabric.launch();
  std::shared_ptr<FabricModule> m = fabric.setup(model);  // FabricModule is an nn::Module
  EXPECT_EQ(m->original_module(), model);
  EXPECT_EQ(fabric.models_setup(), 1);

  auto model2 = std::make_shared<Net>();
  auto opt2 = std::make_shared<optim::SGD>(model2->parameters(), /*lr=*/0.1);
  auto [m2, o2] = fabric.setup(model2, opt2);  // o2: std::shared_ptr<FabricOptimizer>
  static_assert(std::is_same_v<decltype(o2), std::shared_ptr<FabricOptimizer>>);
  optim::Optimizer& as_optimizer = *o2;  // FabricOptimizer is an optim::Optimizer
  (void)as_optimizer;
  {
    auto ctx = fabric.init_module(/*empty_init=*/true);  // RAII
  }
  Tensor before = model2->fc->weight.clone();
  Tensor loss = (*m2)(x).sum();
  fabric.backward(loss);
  o2->step();
  o2->zero_grad();
  EXPECT_FALSE(model2->fc->weight.equal(before));  // the step changed the weights

  // state_dict(): an insertion-ordered name -> Tensor map.
  auto sd = model2->state_dict();
  EXPECT_EQ(sd.count("fc.weight"), 1u);
  EXPECT_EQ(sd.at("scale").sizes(), (Shape{2}));
  std::vector<std::string> names;
  for (const auto& [name, tensor] : sd) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"scale", "fc.weight", "fc.bias"}));
  // parameters() is a std::vector<Tensor>; a parameter is a Tensor that requires grad.
  std::vector<Tensor> params = model2->parameters();
  for (const Tensor& p : params) EXPECT_TRUE(p.requires_grad());
  EXPECT_THROW(fabric.setup(m), ValueError);
  try {
    fabric.setup(m);
  } catch (const Error& e) {  // loom::ValueError is a loom::Error (a std::runtime_error)
    const std::runtime_error& base = e;
    EXPECT_NE(std::string(base.what()).find("FabricModule"), std::string::npos);
  }
}

}  // namespace
