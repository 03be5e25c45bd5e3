// Random initialisation against memory speed, in one run: randn / rand fills of a 64 MiB f32
// tensor (16M values) and a bf16 one, and the baseline, a memcpy of the same 64 MiB, on 1 and
// 2 threads. The closing lines give each fill's rate as a fraction of memcpy's.
//
// Napkin math: memcpy moves 2 x 64 MiB per pass (about 23.5 GB/s on one thread here,
// docs/design.md "Machines"); a fill writes 64 MiB once, so "memory speed" for a fill is about
// twice memcpy's bytes-per-second figure as counted here (bytes of the destination). A normal
// value costs one Philox block per 4 values (10 rounds of two 32 x 32 multiplies), a log, a
// sqrt and a sincos polynomial per pair: about 60 vector operations per 16 values.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/parallel.h"
#include "tensor/factories.h"
#include "tensor/random.h"

namespace {

using loom::DType;
using loom::Tensor;

constexpr int64_t kN = int64_t(1) << 24;

void BM_memcpy(benchmark::State& state) {
  loom::set_num_threads(int(state.range(0)));
  std::vector<float> src(size_t(kN), 1.0f);
  std::vector<float> dst(size_t(kN), 0.0f);
  for (auto _ : state) {
    loom::kernels::parallel_for(0, kN, loom::kernels::kMemoryBoundGrain, [&](int64_t b, int64_t e) {
      std::memcpy(dst.data() + b, src.data() + b, size_t(e - b) * sizeof(float));
    });
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kN * int64_t(sizeof(float)));
}

void BM_fill(benchmark::State& state, DType dtype, bool normal) {
  loom::set_num_threads(int(state.range(0)));
  loom::manual_seed(0);
  Tensor t = loom::empty({kN}, dtype);
  for (auto _ : state) {
    if (normal) loom::fill_normal(t, 0.0, 1.0);
    else loom::fill_uniform(t, -1.0, 1.0);
    benchmark::DoNotOptimize(t.raw_data_ptr());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kN * int64_t(loom::dtype_size(dtype)));
  state.counters["values/s"] =
      benchmark::Counter(double(state.iterations()) * double(kN), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_memcpy)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_fill, randn_f32, DType::f32, true)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_fill, rand_f32, DType::f32, false)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_fill, randn_bf16, DType::bf16, true)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// Keeps each run's bytes per second for the closing ratios; one-thread runs rated by their CPU
// time (bytes/s x real / CPU time), which other processes on a shared machine do not inflate.
class Collect : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> rate;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      auto it = r.counters.find("bytes_per_second");
      if (it == r.counters.end()) continue;
      const std::string name = r.benchmark_name();
      const bool one_thread = name.find("/1/") != std::string::npos;
      const double cpu = r.GetAdjustedCPUTime(), real = r.GetAdjustedRealTime();
      rate[name] = double(it->second) * (one_thread && cpu > 0 ? real / cpu : 1.0);
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::printf("%s\n", loom::cpu_capability_description().c_str());
  benchmark::Initialize(&argc, argv);
  Collect reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  for (const char* threads : {"1", "2"}) {
    const std::string base = std::string("BM_memcpy/") + threads + "/real_time";
    if (!reporter.rate.count(base)) continue;
    const double copy = reporter.rate[base];
    for (const char* fill : {"randn_f32", "rand_f32", "randn_bf16"}) {
      const std::string name = std::string("BM_fill/") + fill + "/" + threads + "/real_time";
      if (!reporter.rate.count(name)) continue;
      std::printf("ratio %-10s %s thread(s) (%s time): %.2f GB/s written = %.2fx memcpy's %.2f GB/s\n",
                  fill, threads, std::string(threads) == "1" ? "CPU" : "wall",
                  reporter.rate[name] * 1e-9, reporter.rate[name] / copy, copy * 1e-9);
    }
  }
  benchmark::Shutdown();
  return 0;
}
