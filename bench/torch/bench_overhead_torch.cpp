// libtorch's side of bench_overhead: the same one-element add and forward+backward through
// the PyTorch C++ API, so the two binaries print comparable ns per iteration on one machine.
// Built only when CMake finds Torch (bench/CMakeLists.txt), and only on request:
//   cmake --build build/ci --target bench_overhead_torch
#include <benchmark/benchmark.h>
#include <torch/torch.h>

namespace {

void BM_add_1elem(benchmark::State& state) {
  torch::Tensor a = torch::ones({1}), b = torch::ones({1});
  for (auto _ : state) {
    torch::Tensor c = a + b;
    benchmark::DoNotOptimize(c.unsafeGetTensorImpl());
  }
}

void BM_add_1elem_nograd(benchmark::State& state) {
  torch::NoGradGuard no_grad;
  torch::Tensor a = torch::ones({1}), b = torch::ones({1});
  for (auto _ : state) {
    torch::Tensor c = a + b;
    benchmark::DoNotOptimize(c.unsafeGetTensorImpl());
  }
}

void BM_fwd_bwd_1elem(benchmark::State& state) {
  torch::Tensor x = torch::ones({1}).requires_grad_();
  torch::Tensor w = torch::full({1}, 2.0).requires_grad_();
  torch::Tensor b = torch::full({1}, 3.0).requires_grad_();
  for (auto _ : state) {
    torch::Tensor y = (x * w + b).sum();
    y.backward();
    benchmark::DoNotOptimize(y.unsafeGetTensorImpl());
  }
}

void BM_fwd_bwd_1elem_zero_grad(benchmark::State& state) {
  torch::Tensor x = torch::ones({1}).requires_grad_();
  torch::Tensor w = torch::full({1}, 2.0).requires_grad_();
  torch::Tensor b = torch::full({1}, 3.0).requires_grad_();
  for (auto _ : state) {
    torch::Tensor y = (x * w + b).sum();
    y.backward();
    x.mutable_grad().reset();
    w.mutable_grad().reset();
    b.mutable_grad().reset();
    benchmark::DoNotOptimize(y.unsafeGetTensorImpl());
  }
}

BENCHMARK(BM_add_1elem)->Unit(benchmark::kNanosecond)->MinTime(1.0);
BENCHMARK(BM_add_1elem_nograd)->Unit(benchmark::kNanosecond)->MinTime(1.0);
BENCHMARK(BM_fwd_bwd_1elem)->Unit(benchmark::kNanosecond)->MinTime(1.0);
BENCHMARK(BM_fwd_bwd_1elem_zero_grad)->Unit(benchmark::kNanosecond)->MinTime(1.0);

}  // namespace

int main(int argc, char** argv) {
  torch::set_num_threads(1);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
