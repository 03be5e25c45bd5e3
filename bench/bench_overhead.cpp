// Per-op overhead on one-element tensors, where the arithmetic is free and every nanosecond
// is bookkeeping: argument checks, shape and stride vectors, the TensorImpl and Storage
// allocations, kernel dispatch and, with autograd, graph nodes and the engine's walk.
//
// Napkin math: a heap allocation is ~20 ns, a shared_ptr control block another; an add
// builds one output (TensorImpl + sizes + strides + Storage + 4 data bytes), so a floor of
// ~100 ns. The forward+backward (y = (x * w + b).sum(); y.backward()) runs 3 ops forward
// with 3 nodes and 3 leaf accumulators, then the engine: ~20 allocations and some
// std::function calls, a few µs. libtorch 1.13 on this machine: ~0.8 µs for the add and
// ~17 µs for the forward+backward (bench_overhead_torch, built when Torch is found); the
// target is at most half of each.
#include <benchmark/benchmark.h>

#include "loom.h"

namespace {

using namespace loom;

void BM_add_1elem(benchmark::State& state) {
  Tensor a = ones({1}), b = ones({1});
  for (auto _ : state) {
    Tensor c = a + b;
    benchmark::DoNotOptimize(c.impl());
  }
}

void BM_add_1elem_nograd(benchmark::State& state) {
  NoGradGuard no_grad;
  Tensor a = ones({1}), b = ones({1});
  for (auto _ : state) {
    Tensor c = a + b;
    benchmark::DoNotOptimize(c.impl());
  }
}

void BM_fwd_bwd_1elem(benchmark::State& state) {
  Tensor x = ones({1}).requires_grad_();
  Tensor w = full({1}, 2.0).requires_grad_();
  Tensor b = full({1}, 3.0).requires_grad_();
  for (auto _ : state) {
    Tensor y = (x * w + b).sum();
    y.backward();
    // Gradients accumulate across iterations as in a loop without zero_grad; that matches
    // the libtorch loop (its accumulate is an in-place add too).
    benchmark::DoNotOptimize(y.impl());
  }
  state.counters["dw"] = w.grad().item<double>() / double(state.iterations());
}

void BM_fwd_bwd_1elem_zero_grad(benchmark::State& state) {
  Tensor x = ones({1}).requires_grad_();
  Tensor w = full({1}, 2.0).requires_grad_();
  Tensor b = full({1}, 3.0).requires_grad_();
  for (auto _ : state) {
    Tensor y = (x * w + b).sum();
    y.backward();
    x.set_grad(Tensor());
    w.set_grad(Tensor());
    b.set_grad(Tensor());
    benchmark::DoNotOptimize(y.impl());
  }
}

BENCHMARK(BM_add_1elem)->Unit(benchmark::kNanosecond)->MinTime(1.0);
BENCHMARK(BM_add_1elem_nograd)->Unit(benchmark::kNanosecond)->MinTime(1.0);
BENCHMARK(BM_fwd_bwd_1elem)->Unit(benchmark::kNanosecond)->MinTime(1.0);
BENCHMARK(BM_fwd_bwd_1elem_zero_grad)->Unit(benchmark::kNanosecond)->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
