// DDP step time and set-up cost on 2 CPU ranks x 1 thread each, through Fabric.
//
// Models (both ranks, batch 128 per rank, SGD lr 0.01, cross-entropy):
//   mlp:  784-1024-1024-10 with ReLU (1.86 M parameters, 7.5 MB of f32 gradients)
//   deep: 100 Linear(128, 128) layers with ReLU between them (1.65 M parameters in 200
//         tensors), He-normal weights and zero biases so activations neither vanish into
//         denormals nor blow up over 100 layers.
//
// A step is forward, loss, fabric.backward, optimizer step, zero_grad. "ddp" synchronises
// gradients (Reducer: bucketed all-reduce overlapped with backward); "nosync" is the same
// DDP-wrapped model with every step inside fabric.no_backward_sync(). nosync keeps both
// processes running side by side on the same cores, so it measures the same compute under
// the same contention; single_device in one process would run alone on the machine and hide
// what two ranks cost each other. DDP overhead per step = ddp - nosync (medians). The two
// modes alternate in rounds so drift on a shared machine hits both alike.
//
// Set-up: Fabric::setup(model, optimizer) of a fresh mlp under ddp (dominated by the rank-0
// broadcast of parameters), against a raw dist::ProcessGroup broadcast of the same number of
// bytes in one flat buffer, both in the same run.
//
// Fabric launches rank 1 by re-executing this binary; rank 0 prints.
//   bench_ddp [--rounds 8] [--steps 5] [--warmup 5] [--setups 9] [--threads 1]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "bench/bench_util.h"
#include "fabric/ddp.h"
#include "fabric/fabric.h"
#include "kernels/cpu/parallel.h"
#include "nn/nn.h"
#include "optim/sgd.h"
#include "tensor/factories.h"
#include "tensor/random.h"

namespace {

using namespace loom;
using Clock = std::chrono::steady_clock;

struct Args {
  int rounds = 8, steps = 5, warmup = 5, setups = 9, threads = 1;
};

Args parse(int argc, char** argv) {
  Args a;
  a.rounds = bench::int_flag(argc, argv, "--rounds", a.rounds);
  a.steps = bench::int_flag(argc, argv, "--steps", a.steps);
  a.warmup = bench::int_flag(argc, argv, "--warmup", a.warmup);
  a.setups = bench::int_flag(argc, argv, "--setups", a.setups);
  a.threads = bench::int_flag(argc, argv, "--threads", a.threads);
  return a;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

using bench::median;

double minimum(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}

std::shared_ptr<nn::Sequential> make_mlp() {
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(784, 1024), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(1024, 1024), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(1024, 10));
}

std::shared_ptr<nn::Sequential> make_deep(int layers, int64_t width) {
  auto seq = std::make_shared<nn::Sequential>();
  for (int i = 0; i < layers; ++i) {
    auto lin = std::make_shared<nn::Linear>(width, width);
    NoGradGuard no_grad;
    nn::init::normal_(lin->weight, 0.0, std::sqrt(2.0 / double(width)));
    nn::init::zeros_(lin->bias);
    seq->push_back(lin);
    if (i + 1 < layers) seq->push_back(std::make_shared<nn::ReLU>());
  }
  return seq;
}

struct StepTimes {
  std::vector<double> ddp, nosync;
};

StepTimes time_steps(Fabric& fabric, const std::shared_ptr<nn::Module>& model, int64_t in,
                     int64_t classes, const Args& args) {
  auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.01);
  auto [m, o] = fabric.setup(model, opt);
  Tensor x = randn({128, in});
  Tensor y = randint(0, classes, {128});
  auto step = [&, m = m, o = o] {
    Tensor loss = cross_entropy((*m)(x), y);
    fabric.backward(loss);
    o->step();
    o->zero_grad();
  };
  auto timed = [&](bool sync, std::vector<double>& out, int n) {
    for (int i = 0; i < n; ++i) {
      auto t = Clock::now();
      if (sync) {
        step();
      } else {
        ScopeStack guard = fabric.no_backward_sync(*m);
        step();
      }
      out.push_back(seconds_since(t));
    }
  };
  std::vector<double> scratch;
  timed(true, scratch, args.warmup);
  timed(false, scratch, args.warmup);
  StepTimes r;
  for (int round = 0; round < args.rounds; ++round) {
    fabric.barrier();
    timed(true, r.ddp, args.steps);
    fabric.barrier();
    timed(false, r.nosync, args.steps);
  }
  return r;
}

void report(const char* name, const StepTimes& t) {
  double d = median(t.ddp), n = median(t.nosync);
  std::printf("%-6s ddp %8.2f ms (min %7.2f)  nosync %8.2f ms (min %7.2f)  overhead %+7.2f ms/step (%+.0f%%)\n",
              name, d * 1e3, minimum(t.ddp) * 1e3, n * 1e3, minimum(t.nosync) * 1e3,
              (d - n) * 1e3, 100.0 * (d - n) / n);
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse(argc, argv);
  Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2});
  fabric.launch();
  set_num_threads(args.threads);  // after launch: setup_environment picks cores / ranks
  manual_seed(1234);              // same data and init on both ranks (setup broadcasts anyway)

  StepTimes mlp = time_steps(fabric, make_mlp(), 784, 10, args);
  StepTimes deep = time_steps(fabric, make_deep(100, 128), 128, 128, args);

  // Set-up cost: a fresh mlp each time (setup wraps a module once), interleaved with a raw
  // broadcast of the same bytes through the strategy's process group.
  auto& ddp = dynamic_cast<DDPStrategy&>(fabric.strategy());
  const auto& group = ddp.process_group();
  std::vector<double> setup_s, bcast_s;
  int64_t numel = make_mlp()->num_parameters();
  Tensor flat = zeros({numel});
  group->broadcast(flat, 0);
  for (int i = 0; i < args.setups; ++i) {
    auto model = make_mlp();
    auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.01);
    fabric.barrier();
    auto t = Clock::now();
    auto wrapped = fabric.setup(model, opt);
    setup_s.push_back(seconds_since(t));
    fabric.barrier();
    t = Clock::now();
    group->broadcast(flat, 0);
    bcast_s.push_back(seconds_since(t));
  }

  if (fabric.is_global_zero()) {
    std::printf("DDP on CPU: 2 ranks x %d thread(s), batch 128 per rank, %d rounds x %d steps per mode; "
                "medians per step on rank 0\n", args.threads, args.rounds, args.steps);
    report("mlp", mlp);
    report("deep", deep);
    double s = median(setup_s), b = median(bcast_s);
    std::printf("setup  Fabric::setup(mlp) %.2f ms (min %.2f)  raw broadcast of %.1f MB %.2f ms (min %.2f)"
                "  ratio %.2f\n", s * 1e3, minimum(setup_s) * 1e3, double(numel) * 4 / 1e6, b * 1e3,
                minimum(bcast_s) * 1e3, s / b);
  }
  return 0;
}
