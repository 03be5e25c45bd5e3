// What Fabric costs around the model: setup() on a single CPU device next to building the
// model, and init_module(empty_init) against normal construction of a 1e9-parameter model.
//
// Napkin math: setup() validates, wraps the module and the optimizer and moves parameters to
// the device (a no-op on the CPU): work per parameter tensor is a few map lookups, so setup
// should be a few µs for the 6 tensors of the MLP and ~100x that for the 400 tensors of a
// 200-layer stack; building either model is dominated by initialising its parameters.
//
// The big model: 15 x nn::Linear(8192, 8192) = 15 * (67.1M + 8192) = 1.007e9 parameters,
// 4.03 GB of f32. Normal construction allocates and fills all of it with U(-r, r): at ~10 GB/s
// of first-touch + write on two threads that is ~0.4 s plus the RNG (~2 ns/element/thread,
// ~1 s); PyTorch 1.13 takes ~8.5 s here. With init_module(empty_init = true) the init table
// skips initialisation and storage is lazy, so construction allocates nothing: the cost is
// 15 modules' metadata, tens of µs (PyTorch's meta-device construction: ~1.4 ms).
//
//   bench_fabric_setup                      # setup benches, then the 1e9-parameter model once
//   bench_fabric_setup --skip_big           # setup benches only
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "fabric/fabric.h"
#include "loom.h"
#include "optim/sgd.h"

namespace {

using namespace loom;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::shared_ptr<nn::Sequential> make_mlp() {
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(784, 1024), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(1024, 1024), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(1024, 10));
}

std::shared_ptr<nn::Sequential> make_stack(int layers, int64_t width) {
  auto s = std::make_shared<nn::Sequential>();
  for (int i = 0; i < layers; ++i) s->push_back(std::make_shared<nn::Linear>(width, width));
  return s;
}

Fabric& fabric() {
  static Fabric* f = [] {
    auto* fab = new Fabric({.accelerator = "cpu", .strategy = "auto", .devices = 1});
    fab->launch();
    return fab;
  }();
  return *f;
}

template <class Make>
void bench_build(benchmark::State& state, Make make) {
  for (auto _ : state) {
    auto m = make();
    benchmark::DoNotOptimize(m.get());
  }
}

// setup(module, optimizer) on a fresh model each iteration; only setup is timed.
template <class Make>
void bench_setup(benchmark::State& state, Make make) {
  Fabric& f = fabric();
  for (auto _ : state) {
    auto m = make();
    auto opt = std::make_shared<optim::SGD>(m->parameters(), 0.01);
    auto t0 = Clock::now();
    auto [fm, fo] = f.setup(m, opt);
    state.SetIterationTime(seconds_since(t0));
    benchmark::DoNotOptimize(fm.get());
  }
}

void BM_build_mlp(benchmark::State& s) { bench_build(s, make_mlp); }
void BM_setup_mlp(benchmark::State& s) { bench_setup(s, make_mlp); }
void BM_build_stack200x64(benchmark::State& s) { bench_build(s, [] { return make_stack(200, 64); }); }
void BM_setup_stack200x64(benchmark::State& s) { bench_setup(s, [] { return make_stack(200, 64); }); }
// The setup-cost microbenchmark users run: 100 x Linear(128, 128), 200 tensors.
void BM_setup_stack100x128(benchmark::State& s) { bench_setup(s, [] { return make_stack(100, 128); }); }

BENCHMARK(BM_build_mlp)->Unit(benchmark::kMicrosecond);
// Fixed iteration counts: each iteration also builds a model (untimed), which min-time
// alone would repeat ~1e5 times for a µs-scale setup.
BENCHMARK(BM_setup_mlp)->Unit(benchmark::kMicrosecond)->UseManualTime()->Iterations(300);
BENCHMARK(BM_build_stack200x64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_setup_stack200x64)->Unit(benchmark::kMicrosecond)->UseManualTime()->Iterations(300);
BENCHMARK(BM_setup_stack100x128)->Unit(benchmark::kMicrosecond)->UseManualTime()->Iterations(300);

// The 1e9-parameter stack, built once each way inside init_module. Returns seconds; fills the
// peak bytes the construction added on top of what was live before.
double build_big(bool empty_init, int64_t* peak_bytes, int64_t* params) {
  Fabric& f = fabric();  // launched outside the timed region
  reset_peak_memory_stats();
  const int64_t before = memory_stats().current_bytes;
  auto t0 = Clock::now();
  std::shared_ptr<nn::Sequential> m;
  {
    auto ctx = f.init_module(empty_init);
    m = make_stack(15, 8192);
  }
  double s = seconds_since(t0);
  *peak_bytes = memory_stats().peak_bytes - before;
  *params = 0;
  for (const Tensor& p : m->parameters()) *params += p.numel();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  bool skip_big = false;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--skip_big") == 0) {
      skip_big = true;
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      break;
    }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  if (!skip_big) {
    std::printf("\n15 x Linear(8192, 8192) inside Fabric.init_module, threads %d\n",
                get_num_threads());
    std::printf("%-22s %14s %16s %14s\n", "construction", "time", "peak bytes", "params");
    for (bool empty : {true, false}) {
      int64_t peak = 0, params = 0;
      double s = build_big(empty, &peak, &params);
      if (empty) {  // cheap: a warm-up above, then the median of 5, as init_module_torch.py
        std::vector<double> t;
        for (int i = 0; i < 5; ++i) t.push_back(build_big(empty, &peak, &params));
        std::sort(t.begin(), t.end());
        s = t[2];
      }
      if (empty)
        std::printf("%-22s %11.1f us %16lld %14lld\n", "empty_init=true", s * 1e6,
                    (long long)peak, (long long)params);
      else
        std::printf("%-22s %11.3f s  %16lld %14lld\n", "empty_init=false", s, (long long)peak,
                    (long long)params);
    }
  }
  benchmark::Shutdown();
  return 0;
}
