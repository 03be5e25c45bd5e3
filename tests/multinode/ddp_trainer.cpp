// The program of the multi-node test (tests/dist/multinode_ddp.sh) and of its step-time figure:
// a small MLP trained with Fabric's ddp on a synthetic regression batch, under loomrun.
//
// Every rank computes its slice of one fixed global batch per step (rank r: rows r*b..r*b+b-1
// of a batch drawn from a generator seeded by the step), so any layout of the same world size
// sees the same data. Each rank writes OUT/rank<R>.txt: its group's transport, the global
// mean loss of every step and its final parameters, as hex floats, which the script compares
// bit for bit between a 2-node run and a single-host run. Rank 0 prints the median step time.
//
//   loomrun --nproc-per-node 2 --nnodes 2 --node-rank K --master-addr A ddp_trainer OUT
//           [--steps 20] [--hidden 64] [--layers 2] [--batch 8]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dist/gloo_process_group.h"
#include "fabric/ddp.h"
#include "fabric/fabric.h"
#include "loom.h"
#include "optim/sgd.h"

using namespace loom;

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

std::string hex(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"DDP trainer of the multi-node test"};
  std::string out;
  int steps = 20, hidden = 64, layers = 2, batch = 8;
  app.add_option("out", out, "folder for rank<R>.txt")->required();
  app.add_option("--steps", steps, "optimizer steps");
  app.add_option("--hidden", hidden, "hidden width");
  app.add_option("--layers", layers, "hidden layers");
  app.add_option("--batch", batch, "rows per rank per step");
  CLI11_PARSE(app, argc, argv);

  const int world = env_int("WORLD_SIZE", 1);
  const int local = env_int("LOCAL_WORLD_SIZE", world);
  Fabric fabric({.accelerator = "cpu",
                 .strategy = "ddp",
                 .devices = local,
                 .num_nodes = world / local,
                 .precision = "32-true"});
  fabric.launch([&](Fabric& f) {
    f.seed_everything(1234);
    constexpr int64_t kIn = 16;
    auto model = std::make_shared<nn::Sequential>();
    int64_t width = kIn;
    for (int l = 0; l < layers; ++l) {
      model->push_back(std::make_shared<nn::Linear>(width, hidden));
      model->push_back(std::make_shared<nn::Tanh>());
      width = hidden;
    }
    model->push_back(std::make_shared<nn::Linear>(width, 1));
    auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.05);
    auto [m, o] = f.setup(model, opt);

    std::string transport = "unknown";
    if (auto* ddp = dynamic_cast<DDPStrategy*>(&f.strategy())) {
      if (auto* g = dynamic_cast<dist::GlooProcessGroup*>(ddp->process_group().get())) {
        transport = g->hierarchical()    ? "hierarchical " + g->topology().str()
                    : g->shared_memory() ? "shared-memory " + g->topology().str()
                                         : std::string("tcp");
      }
    }
    std::vector<double> losses, times;
    const int rank = f.global_rank();
    const int64_t global = int64_t(batch) * f.world_size();
    for (int step = 0; step < steps; ++step) {
      Generator g(uint64_t(1000 + step));
      Tensor x = empty({global, kIn});
      fill_normal(x, 0.0, 1.0, g);
      Tensor y = x.sum({-1}, /*keepdim=*/true).tanh();
      Tensor xr = x.slice(0, rank * batch, (rank + 1) * batch).contiguous();
      Tensor yr = y.slice(0, rank * batch, (rank + 1) * batch).contiguous();
      const auto start = std::chrono::steady_clock::now();
      Tensor loss = mse_loss((*m)(xr), yr);
      f.backward(loss);
      o->step();
      o->zero_grad();
      times.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      losses.push_back(f.all_reduce(loss.item<double>()));
    }
    std::filesystem::create_directories(out);
    std::ofstream file(out + "/rank" + std::to_string(rank) + ".txt");
    file << "transport " << transport << "\n";
    for (double l : losses) file << "loss " << hex(l) << "\n";
    char dec[64];
    for (double l : losses) {
      std::snprintf(dec, sizeof dec, "%.17g", l);
      file << "loss_decimal " << dec << "\n";
    }
    for (const auto& [name, p] : model->named_parameters()) {
      Tensor c = p.detach().contiguous();
      file << "param " << name;
      for (double v : c.to_double_vector()) file << " " << hex(v);
      file << "\n";
    }
    std::sort(times.begin(), times.end());
    f.print("transport: ", transport, "; median step ", times[times.size() / 2] * 1e3, " ms over ",
            steps, " steps; final loss ", losses.back());
  });
  return 0;
}
