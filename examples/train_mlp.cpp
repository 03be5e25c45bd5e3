// The main job: a real training run through Fabric, several processes on the CPU by default.
//
// A 3-layer MLP learns to classify points of a noisy 2-D spiral (K arms). Fabric launches the
// ranks itself (strategy "ddp": rank 0 re-executes this program for the others), shards the
// data with a DistributedSampler, averages gradients during backward, logs to CSV and
// TensorBoard on rank 0 (one folder per run, DIR/logs/version_N: a rerun takes the next N),
// and saves a checkpoint at the end.
//
//   train_mlp [--devices 2] [--strategy ddp] [--precision 32-true] [--epochs 20] [--out DIR]
#include <CLI/CLI.hpp>
#include <cmath>
#include <filesystem>

#include "data/dataloader.h"
#include "data/dataset.h"
#include "fabric/fabric.h"
#include "fabric/loggers/csv_logger.h"
#include "fabric/loggers/tensorboard_logger.h"
#include "kernels/cpu/capability.h"
#include "loom.h"
#include "optim/adam.h"

using namespace loom;

namespace {

// N points on K spiral arms with Gaussian noise: inputs (N, 2) f32, labels (N,) i64.
std::pair<Tensor, Tensor> make_spiral(int64_t n, int64_t k, uint64_t seed) {
  Generator g(seed);
  Tensor noise = empty({n, 2});
  fill_normal(noise, 0.0, 0.08, g);
  Tensor x = empty({n, 2});
  Tensor y = empty({n}, DType::i64);
  float* px = x.data_ptr<float>();
  const float* pn = noise.data_ptr<float>();
  int64_t* py = y.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t arm = i % k;
    double r = double(i / k) / double(n / k);        // radius in [0, 1)
    double theta = 4.0 * r + 2.0 * M_PI * double(arm) / double(k);
    px[2 * i] = float(r * std::cos(theta)) + pn[2 * i];
    px[2 * i + 1] = float(r * std::sin(theta)) + pn[2 * i + 1];
    py[i] = arm;
  }
  return {x, y};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train an MLP on a spiral with loom's Fabric"};
  int devices = 2, epochs = 20, hidden = 128, batch = 64;
  std::string strategy = "ddp", precision = "32-true", accelerator = "cpu", out = "runs/train_mlp";
  app.add_option("--devices", devices, "processes (CPU) or GPUs");
  app.add_option("--strategy", strategy, "ddp, ddp_spawn, single_device, auto");
  app.add_option("--precision", precision, "32-true, bf16-mixed, 16-mixed, 64-true, ...");
  app.add_option("--accelerator", accelerator, "cpu, cuda, auto");
  app.add_option("--epochs", epochs, "passes over the data");
  app.add_option("--hidden", hidden, "hidden width");
  app.add_option("--batch", batch, "batch size per process");
  app.add_option("--out", out, "folder for logs and the checkpoint");
  CLI11_PARSE(app, argc, argv);

  // No version given: each run logs to the next free version_N, both loggers to the same one.
  auto logger = std::make_shared<CSVLogger>(out, "logs");
  auto tensorboard = std::make_shared<TensorBoardLogger>(out, "logs");
  Fabric fabric({.accelerator = accelerator, .strategy = strategy, .devices = devices,
                 .precision = precision, .loggers = {logger, tensorboard}});
  fabric.launch([&](Fabric& f) {
    f.print(cpu_capability_description());  // which kernels this machine runs
    f.seed_everything(42);
    auto [x, y] = make_spiral(3000, 3, /*seed=*/7);  // same data on every rank
    auto dataset = std::make_shared<data::TensorDataset>(std::vector<Tensor>{x, y});
    auto loader = std::make_shared<data::DataLoader>(
        dataset, data::DataLoaderOptions{.batch_size = batch, .shuffle = true, .seed = 1});

    std::shared_ptr<nn::Sequential> model;
    {
      auto ctx = f.init_module();
      model = std::make_shared<nn::Sequential>(
          std::make_shared<nn::Linear>(2, hidden), std::make_shared<nn::ReLU>(),
          std::make_shared<nn::Linear>(hidden, hidden), std::make_shared<nn::ReLU>(),
          std::make_shared<nn::Linear>(hidden, 3));
    }
    auto opt = std::make_shared<optim::AdamW>(model->parameters(), 3e-3);
    auto [m, o] = f.setup(model, opt);
    auto train = f.setup_dataloaders(loader);

    for (int epoch = 0; epoch < epochs; ++epoch) {
      double total = 0.0;
      int64_t steps = 0;
      for (data::Batch& b : *train) {
        Tensor loss = cross_entropy((*m)(b[0]), b[1]);
        f.backward(loss);
        o->step();
        o->zero_grad();
        total += loss.item<double>();
        ++steps;
      }
      double mean_loss = f.all_reduce(total / double(steps));
      f.log("train_loss", mean_loss, epoch);
      if (epoch % 5 == 4 || epoch == epochs - 1)
        f.print("epoch ", epoch + 1, "/", epochs, "  loss ", mean_loss);
    }
    // Accuracy on the full data (each rank evaluates, rank 0 reports the mean).
    NoGradGuard no_grad;
    m->eval();
    Tensor pred = (*m)(x).argmax(-1);
    double acc = pred.eq(y).to(DType::f32).mean().item<double>();
    acc = f.all_reduce(acc);
    f.log("accuracy", acc, epochs);
    f.print("accuracy ", acc * 100.0, "%  (world size ", f.world_size(), ", ", f.precision().name(), ")");
    std::filesystem::create_directories(out);
    f.save(out + "/model.safetensors", {{"model", model}, {"optimizer", opt}, {"epochs", int64_t(epochs)}});
    f.print("checkpoint: ", out, "/model.safetensors  metrics: ", logger->metrics_path());
  });
  return 0;
}
