// GEMM throughput: native::matmul against a direct cblas_sgemm on the same buffers, in one
// binary, for 1 and 2 threads; and bf16/f16 matmul (converted to f32 in panels) at the same size.
//
// Napkin math: a 1024^3 GEMM is 2 * 1024^3 = 2.15 GFLOP. This machine's ceiling is OpenBLAS
// itself (TOOLCHAIN.md: 85 GFLOP/s on 1 thread, 169 on 2), i.e. ~25 ms and ~13 ms per GEMM;
// matmul's overhead (shape logic, one allocation of 4 MiB) should stay within 5% of that.
// The 16-bit variants add the conversion of A, B and C (~3-4 M elements each way) to sgemm.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include "kernels/cpu/parallel.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace {

using loom::DType;
using loom::Tensor;

constexpr int64_t kN = 1024;
constexpr double kFlops = 2.0 * double(kN) * double(kN) * double(kN);

void set_flops(benchmark::State& state) {
  state.counters["FLOP/s"] = benchmark::Counter(kFlops * double(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

void BM_cblas_sgemm(benchmark::State& state) {
  loom::set_num_threads(int(state.range(0)));
  loom::manual_seed(0);
  Tensor a = loom::randn({kN, kN}), b = loom::randn({kN, kN}), c = loom::zeros({kN, kN});
  const float* ap = a.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  float* cp = c.data_ptr<float>();
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(kN), int(kN), int(kN), 1.0f, ap,
                int(kN), bp, int(kN), 0.0f, cp, int(kN));
    benchmark::DoNotOptimize(cp);
    benchmark::ClobberMemory();
  }
  set_flops(state);
}

void BM_matmul(benchmark::State& state, DType dtype) {
  loom::set_num_threads(int(state.range(0)));
  loom::manual_seed(0);
  Tensor a = loom::randn({kN, kN}, dtype), b = loom::randn({kN, kN}, dtype);
  for (auto _ : state) {
    Tensor c = loom::native::matmul(a, b);
    benchmark::DoNotOptimize(c.raw_data_ptr());
    benchmark::ClobberMemory();
  }
  set_flops(state);
}

// The Linear layer's orientation: x @ w^T through a transposed view (no copy).
void BM_matmul_transposed_b(benchmark::State& state) {
  loom::set_num_threads(int(state.range(0)));
  loom::manual_seed(0);
  Tensor a = loom::randn({kN, kN}), w = loom::randn({kN, kN});
  Tensor wt = loom::native::transpose(w, 0, 1);
  for (auto _ : state) {
    Tensor c = loom::native::matmul(a, wt);
    benchmark::DoNotOptimize(c.raw_data_ptr());
    benchmark::ClobberMemory();
  }
  set_flops(state);
}

BENCHMARK(BM_cblas_sgemm)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_matmul, f32, DType::f32)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_transposed_b)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_matmul, bf16, DType::bf16)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_matmul, f16, DType::f16)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
