// A user's program built against loom, from source or installed (see CMakeLists.txt): the README's
// Fabric snippet, complete. Fits y = 3x - 1 through Fabric and fails unless the loss falls.
//
//   use_loom [devices]   (1 by default; 2 trains as two processes with ddp)
#include <cstdio>
#include <cstdlib>
#include <string>

#include "data/dataloader.h"
#include "data/dataset.h"
#include "fabric/fabric.h"
#include "loom.h"

using namespace loom;

int main(int argc, char** argv) {
  int devices = argc > 1 ? std::atoi(argv[1]) : 1;
  Fabric fabric({.accelerator = "cpu", .strategy = devices > 1 ? "ddp" : "auto",
                 .devices = devices, .precision = "32-true"});
  fabric.launch();

  manual_seed(0);
  Tensor x = randn({256, 1});
  Tensor y = x * 3.0 - 1.0;
  auto dataset = std::make_shared<data::TensorDataset>(std::vector<Tensor>{x, y});
  auto train_loader = std::make_shared<data::DataLoader>(
      dataset, data::DataLoaderOptions{.batch_size = 32, .shuffle = true, .seed = 1});

  auto model = std::make_shared<nn::Linear>(1, 1);
  auto opt = std::make_shared<optim::SGD>(model->parameters(), /*lr=*/0.1);
  auto [m, o] = fabric.setup(model, opt);
  auto loader = fabric.setup_dataloaders(train_loader);

  double first = 0.0, last = 0.0;
  for (int epoch = 0; epoch < 10; ++epoch) {
    for (auto& batch : *loader) {
      Tensor loss = mse_loss((*m)(batch[0]), batch[1]);
      fabric.backward(loss);
      o->step();
      o->zero_grad();
      last = loss.item<double>();
      if (first == 0.0) first = last;
    }
  }
  fabric.print("use_loom: loss ", first, " -> ", last, " on ", fabric.world_size(), " process(es)");
  return last < first * 1e-3 ? 0 : 1;
}
