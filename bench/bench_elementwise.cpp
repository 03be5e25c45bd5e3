// Elementwise throughput against the machine's memory bandwidth.
//
// Napkin math: add of two 16M-element f32 tensors moves 3 x 64 MiB (read a, read b, write
// out) and does 16M flops, so it is memory bound: the ceiling is a plain memcpy, which moves
// 2 x 64 MiB (read + write; docs/design.md "Machines" gives ~23.5 GB/s on 1 thread, ~31 on
// 2). The target is add >= 70% of memcpy's GB/s on one thread. relu is as cheap as add per byte;
// gelu_erf is the one that may become compute bound (Eigen's vectorised erf, ~20 flops per
// element). f16 add moves 3 x 32 MiB and converts to f32 and back in blocks.
//
// Variants: `kernel` writes into a preallocated output through the kernel table (the fair
// "a + b -> out"), `inplace` is native::binary_ (a += b, same 3 streams), `alloc` is
// native::binary (allocates and first-touches a fresh 64 MiB output every iteration).
// `transpose` is copy_ from a transposed view (the tiled path). The benchmark argument is
// the thread count.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/parallel.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace {

using namespace loom;
namespace kc = loom::kernels::cpu;

constexpr int64_t kN = int64_t(16) << 20;  // elements per operand

void set_rate(benchmark::State& state, double bytes_per_iter) {
  state.counters["GB/s"] = benchmark::Counter(bytes_per_iter / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

kc::StridedArg arg(const Tensor& t) { return {t.raw_data_ptr(), t.strides().data()}; }

void BM_memcpy(benchmark::State& state) {
  set_num_threads(int(state.range(0)));
  std::vector<float> src(kN, 1.0f), dst(kN, 0.0f);
  // Split like the kernels do, so that 2 threads get 2 memcpys.
  for (auto _ : state) {
    kernels::parallel_for(0, kN, 1 << 15, [&](int64_t b, int64_t e) {
      std::memcpy(dst.data() + b, src.data() + b, size_t(e - b) * sizeof(float));
    });
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, 2.0 * kN * sizeof(float));
}

void binary_kernel_bench(benchmark::State& state, DType dtype) {
  set_num_threads(int(state.range(0)));
  Tensor a = native::to(randn({kN}), Device::cpu(), dtype);
  Tensor b = native::to(randn({kN}), Device::cpu(), dtype);
  Tensor out = zeros({kN}, dtype);
  auto fn = kc::binary_kernels().get(DeviceType::cpu, dtype, "add");
  for (auto _ : state) {
    fn(kc::BinaryKind::add, 1, out.sizes().data(), arg(out), arg(a), arg(b));
    benchmark::ClobberMemory();
  }
  set_rate(state, 3.0 * kN * double(dtype_size(dtype)));
}

void BM_add_f32_kernel(benchmark::State& state) { binary_kernel_bench(state, DType::f32); }
void BM_add_f16_kernel(benchmark::State& state) { binary_kernel_bench(state, DType::f16); }
void BM_add_bf16_kernel(benchmark::State& state) { binary_kernel_bench(state, DType::bf16); }

// Cache-resident add on one thread, the argument being the elements per operand: where the
// AVX-512 build of the f32 arithmetic (kernels/cpu/streaming_avx512.h) can gain; compare a
// run under LOOM_CPU_CAPABILITY=avx2 with the default.
void BM_add_f32_cached(benchmark::State& state) {
  set_num_threads(1);
  const int64_t n = state.range(0);
  Tensor a = randn({n}), b = randn({n}), out = zeros({n});
  auto fn = kc::binary_kernels().get(DeviceType::cpu, DType::f32, "add");
  for (auto _ : state) {
    fn(kc::BinaryKind::add, 1, out.sizes().data(), arg(out), arg(a), arg(b));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_add_f32_inplace(benchmark::State& state) {
  set_num_threads(int(state.range(0)));
  Tensor a = zeros({kN}), b = randn({kN});
  for (auto _ : state) {
    native::binary_(native::BinaryOp::add, a, b);
    benchmark::ClobberMemory();
  }
  set_rate(state, 3.0 * kN * sizeof(float));
}

void BM_add_f32_alloc(benchmark::State& state) {
  set_num_threads(int(state.range(0)));
  Tensor a = randn({kN}), b = randn({kN});
  for (auto _ : state) {
    Tensor c = native::binary(native::BinaryOp::add, a, b);
    benchmark::DoNotOptimize(c.raw_data_ptr());
  }
  set_rate(state, 3.0 * kN * sizeof(float));
}

void unary_kernel_bench(benchmark::State& state, kc::UnaryKind op) {
  set_num_threads(int(state.range(0)));
  Tensor x = randn({kN}), out = zeros({kN});
  auto fn = kc::unary_kernels().get(DeviceType::cpu, DType::f32, "unary");
  for (auto _ : state) {
    fn(op, 1, out.sizes().data(), arg(out), arg(x));
    benchmark::ClobberMemory();
  }
  set_rate(state, 2.0 * kN * sizeof(float));
}

void BM_relu_f32(benchmark::State& state) { unary_kernel_bench(state, kc::UnaryKind::relu); }
void BM_gelu_erf_f32(benchmark::State& state) {
  unary_kernel_bench(state, kc::UnaryKind::gelu_erf);
}

// A 4096 x 4096 f32 transpose made contiguous (64 MiB read, 64 MiB written: the same bytes
// as BM_memcpy), through copy_'s tiled path; its GB/s against memcpy's is the ratio.
void BM_transpose_f32(benchmark::State& state) {
  set_num_threads(int(state.range(0)));
  Tensor x = randn({4096, 4096});
  Tensor t = x.t(), out = empty({4096, 4096});
  for (auto _ : state) {
    native::copy_(out, t);
    benchmark::ClobberMemory();
  }
  set_rate(state, 2.0 * kN * sizeof(float));
}

BENCHMARK(BM_memcpy)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_add_f32_kernel)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_add_f32_cached)->Arg(4096)->Arg(32768)->Arg(262144);
BENCHMARK(BM_add_f32_inplace)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_add_f32_alloc)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_add_f16_kernel)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_add_bf16_kernel)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_transpose_f32)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_relu_f32)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_gelu_erf_f32)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
