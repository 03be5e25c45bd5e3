// Reduction and softmax throughput against the machine's memory bandwidth.
//
// Napkin math: a sum of 16M f32 reads 64 MiB once and writes nothing, so it can run at the
// speed of reading memory; memcpy of the same 64 MiB (read + write, counted here as the
// 64 MiB read, like the sum) is the in-binary denominator. docs/design.md "Machines": copy
// ~23.5 GB/s on 1 thread, 31 on 2; a sum that does not vectorise stalls near 7.5 GB/s on the add latency.
// softmax of (4096, 4096) f32 reads the input twice (max, then exp) and writes the output
// once in place plus a scaling pass: bytes reported are the 64 MiB in + 64 MiB out.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace {

constexpr int64_t kN = int64_t(1) << 24;  // 16M f32 = 64 MiB

void BM_Memcpy(benchmark::State& state) {
  loom::set_num_threads(int(state.range(0)));
  std::vector<float> src(static_cast<size_t>(kN), 1.0f), dst(static_cast<size_t>(kN));
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), size_t(kN) * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kN * int64_t(sizeof(float)));
}

void BM_SumF32(benchmark::State& state) {
  loom::set_num_threads(int(state.range(0)));
  loom::manual_seed(0);
  loom::Tensor x = loom::randn({kN}, loom::DType::f32);
  for (auto _ : state) {
    loom::Tensor s = loom::native::sum(x, {}, false);
    benchmark::DoNotOptimize(s.item<double>());
  }
  state.SetBytesProcessed(state.iterations() * kN * int64_t(sizeof(float)));
}

// Cache-resident sum on one thread, the argument being the elements: where the AVX-512 build
// of the pairwise sum (kernels/cpu/streaming_avx512.h) can gain; compare a run under
// LOOM_CPU_CAPABILITY=avx2 with the default.
void BM_SumF32Cached(benchmark::State& state) {
  loom::set_num_threads(1);
  loom::Tensor x = loom::randn({state.range(0)}, loom::DType::f32);
  for (auto _ : state) benchmark::DoNotOptimize(loom::native::sum(x, {}, false).raw_data_ptr());
  state.SetBytesProcessed(state.iterations() * state.range(0) * int64_t(sizeof(float)));
}

void BM_SumRowsF32(benchmark::State& state) {  // (4096, 4096) summed over the last dim
  loom::set_num_threads(int(state.range(0)));
  loom::Tensor x = loom::randn({4096, 4096}, loom::DType::f32);
  for (auto _ : state) benchmark::DoNotOptimize(loom::native::sum(x, {1}, false).raw_data_ptr());
  state.SetBytesProcessed(state.iterations() * kN * int64_t(sizeof(float)));
}

void BM_SumColsF32(benchmark::State& state) {  // (4096, 4096) summed over the first dim
  loom::set_num_threads(int(state.range(0)));
  loom::Tensor x = loom::randn({4096, 4096}, loom::DType::f32);
  for (auto _ : state) benchmark::DoNotOptimize(loom::native::sum(x, {0}, false).raw_data_ptr());
  state.SetBytesProcessed(state.iterations() * kN * int64_t(sizeof(float)));
}

void BM_SoftmaxF32(benchmark::State& state) {
  loom::set_num_threads(int(state.range(0)));
  loom::Tensor x = loom::randn({4096, 4096}, loom::DType::f32);
  for (auto _ : state) benchmark::DoNotOptimize(loom::native::softmax(x, -1).raw_data_ptr());
  state.SetBytesProcessed(state.iterations() * 2 * kN * int64_t(sizeof(float)));
}

BENCHMARK(BM_Memcpy)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SumF32)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SumF32Cached)->Arg(4096)->Arg(32768)->Arg(262144);
BENCHMARK(BM_SumRowsF32)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SumColsF32)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SoftmaxF32)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
