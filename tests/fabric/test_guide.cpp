// docs/guide.md, compiled and run: the plain loop and the Fabric loop it turns into in five
// changes. The blocks between "[guide: NAME]" and "[end: NAME]" are the guide's snippets,
// line for line (tools/check_docs.sh compares them); on one device the two loops must train
// to the same bits.
#include <gtest/gtest.h>

#include "loom.h"

using namespace loom;

namespace {

// [guide: helpers]
// Your model and your data, unchanged by Fabric.
std::shared_ptr<nn::Module> make_model() {
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(2, 32), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(32, 2));
}

std::shared_ptr<data::DataLoader> make_loader() {
  Generator g(7);
  Tensor x = empty({256, 2});
  fill_normal(x, 0.0, 1.0, g);
  Tensor y = x.sum({1}, false).gt(0.0).to(DType::i64);  // class 1 above the line x0 + x1 = 0
  return std::make_shared<data::DataLoader>(
      std::make_shared<data::TensorDataset>(std::vector<Tensor>{x, y}),
      data::DataLoaderOptions{.batch_size = 32, .shuffle = true, .seed = 1});
}
// [end: helpers]

std::vector<Tensor> train_plain(int epochs) {
  // [guide: before]
  manual_seed(42);
  std::shared_ptr<nn::Module> model = make_model();
  auto opt = std::make_shared<optim::AdamW>(model->parameters(), 3e-3);
  auto loader = make_loader();

  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (data::Batch& b : *loader) {
      Tensor loss = cross_entropy((*model)(b[0]), b[1]);
      opt->zero_grad();
      loss.backward();
      opt->step();
    }
  }
  // [end: before]
  return model->parameters();
}

std::vector<Tensor> train_fabric(int epochs) {
  // [guide: after]
  Fabric fabric({.accelerator = "cpu", .strategy = "single_device", .devices = 1});  // 1
  fabric.launch();
  fabric.seed_everything(42);

  std::shared_ptr<nn::Module> model;
  {
    auto ctx = fabric.init_module();  // 2
    model = make_model();
  }
  auto opt = std::make_shared<optim::AdamW>(model->parameters(), 3e-3);
  auto [m, o] = fabric.setup(model, opt);                 // 3
  auto loader = fabric.setup_dataloaders(make_loader());  // 4

  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (data::Batch& b : *loader) {
      Tensor loss = cross_entropy((*m)(b[0]), b[1]);
      o->zero_grad();
      fabric.backward(loss);  // 5
      o->step();
    }
  }
  // [end: after]
  return m->parameters();
}

TEST(Guide, FabricLoopOnOneDeviceTrainsLikeThePlainLoop) {
  std::vector<Tensor> plain = train_plain(3);
  std::vector<Tensor> fabric = train_fabric(3);
  ASSERT_EQ(plain.size(), fabric.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    ASSERT_EQ(plain[i].sizes(), fabric[i].sizes()) << "parameter " << i;
    EXPECT_TRUE(plain[i].equal(fabric[i])) << "parameter " << i << " differs";
  }
}

TEST(Guide, ThePlainLoopLearns) {
  // The guide's loop must do what it claims: after training, the model separates the data.
  manual_seed(42);
  std::shared_ptr<nn::Module> model = make_model();
  auto opt = std::make_shared<optim::AdamW>(model->parameters(), 3e-3);
  auto loader = make_loader();
  auto loss_of_all = [&] {
    NoGradGuard no_grad;
    double total = 0.0;
    int64_t n = 0;
    for (data::Batch& b : *loader) {
      total += cross_entropy((*model)(b[0]), b[1]).item<double>();
      ++n;
    }
    return total / double(n);
  };
  double before = loss_of_all();
  for (int epoch = 0; epoch < 20; ++epoch)
    for (data::Batch& b : *loader) {
      Tensor loss = cross_entropy((*model)(b[0]), b[1]);
      opt->zero_grad();
      loss.backward();
      opt->step();
    }
  EXPECT_LT(loss_of_all(), 0.5 * before);
}

}  // namespace
