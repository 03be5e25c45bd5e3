// GEMM throughput: native::matmul against a direct cblas_sgemm on the same buffers, in one
// binary, for 1 and 2 threads; and bf16/f16 matmul (converted to f32 in panels) at the same size.
//
// Napkin math: a 1024^3 GEMM is 2 * 1024^3 = 2.15 GFLOP. This machine's ceiling is OpenBLAS
// itself (docs/design.md "Machines": 85 GFLOP/s on 1 thread, 169 on 2), i.e. ~25 ms and
// ~13 ms per GEMM; matmul's overhead (shape logic, one allocation of 4 MiB) should stay within 5% of that.
// The 16-bit variants add the conversion of A, B and C (~3-4 M elements each way) to sgemm.
// The skinny shapes (one dimension of 10) do 5.2 MFLOP each over ~1 MiB of operands: at
// ~100 GFLOP/s their compute is ~50 us, so they are about memory and packing, not FLOPs.
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

void set_flops(benchmark::State& state, double flops_per_iteration = kFlops) {
  state.counters["FLOP/s"] = benchmark::Counter(flops_per_iteration * double(state.iterations()),
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

// GEMMs with one dimension of 10, as a training step's last layer (1024 -> 10, batch 256)
// issues them: its forward x @ w^T, the input gradient dy @ w, the weight gradient dy^T @ x.
// loom runs them in its own kernels (kernels/cpu/gemm_skinny.h); the cblas_sgemm call with
// the same shapes and transposition flags is the baseline. Arguments: shape, threads.
struct SkinnyShape {
  const char* name;
  int64_t m, n, k;
  bool trans_a, trans_b;
};
constexpr SkinnyShape kSkinny[] = {{"x @ w^T (N = 10)", 256, 10, 1024, false, true},
                                   {"dy @ w (K = 10)", 256, 1024, 10, false, false},
                                   {"dy^T @ x (M = 10)", 10, 1024, 256, true, false}};

// The shape's operands as stored (A is (K, M) when transposed, B (N, K)).
struct SkinnyOperands {
  Tensor a, b;
  explicit SkinnyOperands(const SkinnyShape& s) {
    loom::manual_seed(0);
    a = s.trans_a ? loom::randn({s.k, s.m}) : loom::randn({s.m, s.k});
    b = s.trans_b ? loom::randn({s.n, s.k}) : loom::randn({s.k, s.n});
  }
};

void BM_skinny_matmul(benchmark::State& state) {
  const SkinnyShape& s = kSkinny[state.range(0)];
  loom::set_num_threads(int(state.range(1)));
  SkinnyOperands op(s);
  Tensor a = s.trans_a ? loom::native::transpose(op.a, 0, 1) : op.a;
  Tensor b = s.trans_b ? loom::native::transpose(op.b, 0, 1) : op.b;
  for (auto _ : state) {
    Tensor c = loom::native::matmul(a, b);
    benchmark::DoNotOptimize(c.raw_data_ptr());
    benchmark::ClobberMemory();
  }
  state.SetLabel(s.name);
}

void BM_skinny_cblas(benchmark::State& state) {
  const SkinnyShape& s = kSkinny[state.range(0)];
  loom::set_num_threads(int(state.range(1)));
  SkinnyOperands op(s);
  Tensor c = loom::zeros({s.m, s.n});
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
                s.trans_b ? CblasTrans : CblasNoTrans, int(s.m), int(s.n), int(s.k), 1.0f,
                op.a.data_ptr<float>(), int(s.trans_a ? s.m : s.k), op.b.data_ptr<float>(),
                int(s.trans_b ? s.k : s.n), 0.0f, c.data_ptr<float>(), int(s.n));
    benchmark::DoNotOptimize(c.raw_data_ptr());
    benchmark::ClobberMemory();
  }
  state.SetLabel(s.name);
}

// Linear's forward x (M, 1024) @ w^T for w (1024, 1024), through a transposed view (no copy):
// w's rows 4 KiB apart, where sgemm's NoTrans x Trans path loses 6-22% at M <= 512
// (kernels/cpu/gemm.cpp computes C^T there; M = 1024 takes the plain call). The baseline is
// that direct cblas_sgemm call. Arguments: M, threads.
void BM_linear_forward_cblas(benchmark::State& state) {
  const int m = int(state.range(0));
  loom::set_num_threads(int(state.range(1)));
  loom::manual_seed(0);
  Tensor x = loom::randn({m, kN}), w = loom::randn({kN, kN}), c = loom::zeros({m, kN});
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, int(kN), int(kN), 1.0f,
                x.data_ptr<float>(), int(kN), w.data_ptr<float>(), int(kN), 0.0f,
                c.data_ptr<float>(), int(kN));
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * m * kN * kN);
}

void BM_linear_forward(benchmark::State& state) {
  const int m = int(state.range(0));
  loom::set_num_threads(int(state.range(1)));
  loom::manual_seed(0);
  Tensor x = loom::randn({m, kN}), w = loom::randn({kN, kN});
  Tensor wt = loom::native::transpose(w, 0, 1);
  for (auto _ : state) {
    Tensor c = loom::native::matmul(x, wt);
    benchmark::DoNotOptimize(c.raw_data_ptr());
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * m * kN * kN);
}

BENCHMARK(BM_cblas_sgemm)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_matmul, f32, DType::f32)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_matmul, bf16, DType::bf16)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_matmul, f16, DType::f16)
    ->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK(BM_linear_forward_cblas)
    ->ArgsProduct({{64, 256, 1024}, {1, 2}})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_linear_forward)
    ->ArgsProduct({{64, 256, 1024}, {1, 2}})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_skinny_cblas)
    ->ArgsProduct({{0, 1, 2}, {1, 2}})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_skinny_matmul)
    ->ArgsProduct({{0, 1, 2}, {1, 2}})->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
