// Building a model of 1e9 parameters inside Fabric::init_module, with empty_init = true (no
// storage, no initialisation: what meta-device construction is in PyTorch) and normally, in
// one process: the time of each and the growth of the process's peak RSS (getrusage), the
// measure init_module_torch.py takes of PyTorch. bench/compare.sh prints their ratios.
//
// Napkin math: 15 x Linear(8192, 8192) = 15 x (67.1 M + 8192) = 1.007e9 parameters, 4.03 GB
// of f32. Normal construction writes all of it (first touch + U(-r, r)): ~1 s on two threads;
// its peak RSS grows by the 4.03 GB. Empty construction allocates nothing: tens of us, and no
// RSS growth. Empty runs first (its peak is not hidden by the normal model's) and is the
// median of 5 after a warm-up, as in init_module_torch.py.
//
//   bench_init_module [--layers 15] [--width 8192] [--skip_normal 1] [--empty_reps 5 (0: normal only)]
// Prints "init_module <mode> seconds <t> peak_rss_growth_bytes <b> params <n>" per mode.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench/bench_util.h"
#include "fabric/fabric.h"
#include "loom.h"

namespace {

using namespace loom;
using Clock = std::chrono::steady_clock;

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss) * 1024;  // Linux reports KiB
}

struct Built {
  double seconds = 0;
  int64_t rss_growth = 0, params = 0;
};

Built build(Fabric& fabric, bool empty_init, int layers, int64_t width) {
  const int64_t rss0 = peak_rss_bytes();
  auto t0 = Clock::now();
  std::shared_ptr<nn::Sequential> m = std::make_shared<nn::Sequential>();
  {
    auto ctx = fabric.init_module(empty_init);
    for (int i = 0; i < layers; ++i) m->push_back(std::make_shared<nn::Linear>(width, width));
  }
  Built b;
  b.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  b.rss_growth = peak_rss_bytes() - rss0;
  for (const Tensor& p : m->parameters()) b.params += p.numel();
  return b;
}

void print(const char* mode, const Built& b) {
  std::printf("init_module %s seconds %.9f peak_rss_growth_bytes %lld params %lld\n", mode,
              b.seconds, (long long)b.rss_growth, (long long)b.params);
}

}  // namespace

int main(int argc, char** argv) {
  const int layers = bench::int_flag(argc, argv, "--layers", 15);
  const int width = bench::int_flag(argc, argv, "--width", 8192);
  const bool skip_normal = bench::int_flag(argc, argv, "--skip_normal", 0) != 0;
  const int empty_reps = bench::int_flag(argc, argv, "--empty_reps", 5);
  Fabric fabric({.accelerator = "cpu", .strategy = "auto", .devices = 1});
  fabric.launch();
  std::printf("bench_init_module: %d x Linear(%d, %d) inside Fabric::init_module, %d thread(s)\n",
              layers, width, width, get_num_threads());
  if (empty_reps > 0) {
    build(fabric, true, layers, width);  // warm-up
    std::vector<double> t;
    Built empty;
    for (int i = 0; i < empty_reps; ++i) {
      Built b = build(fabric, true, layers, width);
      t.push_back(b.seconds);
      empty.rss_growth = std::max(empty.rss_growth, b.rss_growth);
      empty.params = b.params;
    }
    empty.seconds = bench::median(t);
    print("empty_init", empty);
  }
  if (!skip_normal) print("normal", build(fabric, false, layers, width));
  return 0;
}
