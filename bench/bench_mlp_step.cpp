// One f32 training step of an MLP 784-1024-1024-10 at batch 256 (forward, cross-entropy,
// backward, SGD step, zero_grad) against its GEMM floor, measured in the same run.
//
// Napkin math, B = 256, layers (in, out) = (784, 1024), (1024, 1024), (1024, 10):
//   forward   2 B (784*1024 + 1024*1024 + 1024*10)          = 0.953 GFLOP
//   dW        the same                                       = 0.953 GFLOP
//   dx        2 B (1024*1024 + 1024*10) (no dx for the input) = 0.542 GFLOP
//   total                                                    = 2.449 GFLOP
// Everything else is memory traffic of a few MiB: relu and its mask (2 x 1 MiB), the bias
// rows, the 7.4 MiB of gradients and the SGD pass over 1.86 M parameters (read p and g, write
// p: 22 MiB, ~1 ms at 20 GB/s). The floor is the GEMM work alone at the rate a square
// 1024^3 sgemm reaches in this binary on the same thread count with the fastest library loom
// may call here: OpenBLAS as configured, or oneDNN on an AVX-512 CPU (its AVX-512 rate, ~2x
// OpenBLAS's Haswell kernel); the target is a step within 1.15x of it. Smaller GEMMs (K = 256 for dW, N = 10 for the last layer) run below the
// square rate, so part of any gap is OpenBLAS's and not loom's: the bench also times the
// step's own 8 GEMMs as direct calls of that library (same shapes, transpositions and beta) on
// preallocated buffers, which is what the step costs with zero framework overhead, once
// with warm caches (back to back) and once with each GEMM's operands evicted first ("cold").
// The step's 20 MiB of weights, gradients and activations exceed what this VM's L3 keeps
// (reads fall from ~100 GB/s to 35 GB/s past 16 MiB), so its GEMMs run between the two.
// "in-step GEMM ms" is the time the step itself spends inside loom's gemm kernels (OpenBLAS
// and loom's own, kernels::cpu::set_gemm_timing); the rest of the step is everything else.
// loom runs the step's forward GEMMs (with the bias), the first layer's dW and the last
// layer's dx in oneDNN's matmul primitive (kernels/cpu/gemm.cpp), which is faster there than
// the dnnl_sgemm calls the floor and "step GEMMs" time: in-step GEMMs can come in below them.
//
// Output: Google Benchmark lines, then a table of step, floors and ratios per thread count.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_onednn.h"
#include "kernels/cpu/parallel.h"
#include "loom.h"
#include "optim/sgd.h"

namespace {

using namespace loom;
using Clock = std::chrono::steady_clock;

constexpr int64_t kBatch = 256;
constexpr double kStepFlops =
    2.0 * kBatch * (2.0 * (784.0 * 1024 + 1024.0 * 1024 + 1024.0 * 10) + (1024.0 * 1024 + 1024.0 * 10));
constexpr int64_t kN = 1024;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The two libraries the floor may use: OpenBLAS as the environment configures it, and, where
// loom itself would use it (oneDNN installed, an AVX-512 CPU), oneDNN's sgemm. oneDNN runs one
// thread per call (kernels/cpu/gemm_onednn.h), so on t threads its GEMM is t calls on column
// blocks of C in loom's pool: the rate of that library on t threads with an ideal split.
enum class Library { openblas, onednn };
const char* library_name(Library l) { return l == Library::onednn ? "oneDNN" : "OpenBLAS"; }

void library_sgemm(Library lib, bool ta, bool tb, int m, int n, int k, const float* a, int lda,
                   const float* b, int ldb, float beta, float* c, int ldc) {
  if (lib == Library::openblas) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t parts = std::min<int64_t>(get_num_threads(), std::max(1, n / 64));
  kernels::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t j0 = n * p / parts, j1 = n * (p + 1) / parts;
      kernels::cpu::onednn_sgemm(ta, tb, m, j1 - j0, k, a, lda, b + (tb ? j0 * ldb : j0), ldb,
                                 beta, c + j0, ldc);
    }
  });
}

// Median FLOP/s of a 1024^3 sgemm of `lib` on `threads` threads (3 warm-up calls, 15 timed).
double sgemm_rate(Library lib, int threads) {
  set_num_threads(threads);
  manual_seed(1);
  Tensor a = randn({kN, kN}), b = randn({kN, kN}), c = zeros({kN, kN});
  std::vector<double> t;
  for (int i = 0; i < 18; ++i) {
    auto t0 = Clock::now();
    library_sgemm(lib, false, false, int(kN), int(kN), int(kN), a.data_ptr<float>(), int(kN),
                  b.data_ptr<float>(), int(kN), 0.0f, c.data_ptr<float>(), int(kN));
    if (i >= 3) t.push_back(seconds_since(t0));
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return 2.0 * double(kN * kN * kN) / t[t.size() / 2];
}

// The fastest library on `threads` threads and its rate.
// oneDNN is timed first: OpenBLAS's workers keep spinning for a while after a call, and on
// 2 cores a oneDNN GEMM split over loom's pool right after an OpenBLAS one ran at about half
// its rate in one run out of three.
std::pair<Library, double> best_sgemm(int threads) {
  std::pair<Library, double> best{Library::openblas, 0.0};
  if (kernels::cpu::onednn_available() && cpu_level() >= CpuLevel::avx512)
    best = {Library::onednn, sgemm_rate(Library::onednn, threads)};
  const double r = sgemm_rate(Library::openblas, threads);
  if (r > best.second) best = {Library::openblas, r};
  return best;
}

// The step's GEMMs, row-major, as loom's Linear forward/backward issue them: forward
// x W^T (+ bias, beta = 1), backward dx = dy W and dW = dy^T x (no dx for the input).
// Median time of the 8 back to back. With `cold`, each GEMM is timed alone after a 64 MiB
// write pass has pushed its operands out of the caches (the pass is not timed): the cost of
// the step's GEMMs when their operands come from memory, as the weights and fresh gradient
// buffers of a 20 MiB step partly do, against the warm back-to-back figure.
double step_gemms_seconds(Library lib, bool cold) {
  struct G {
    bool ta, tb;
    int m, n, k;
    float beta;
  };
  constexpr int B = int(kBatch);
  const G gemms[] = {
      {false, true, B, 1024, 784, 1.f},   {false, true, B, 1024, 1024, 1.f},
      {false, true, B, 10, 1024, 1.f},    {false, false, B, 1024, 10, 0.f},
      {true, false, 10, 1024, B, 0.f},    {false, false, B, 1024, 1024, 0.f},
      {true, false, 1024, 1024, B, 0.f},  {true, false, 1024, 784, B, 0.f}};
  manual_seed(2);
  Tensor a = randn({1024 * 1024}), b = randn({1024 * 1024}), c = randn({1024 * 1024});
  std::vector<float> flush(cold ? (size_t(64) << 20) / sizeof(float) : 0);
  auto one = [&](const G& g) {
    // Row-major leading dims: A is (m, k) or stored (k, m); B is (k, n) or stored (n, k).
    int lda = g.ta ? g.m : g.k, ldb = g.tb ? g.k : g.n;
    library_sgemm(lib, g.ta, g.tb, g.m, g.n, g.k, a.data_ptr<float>(), lda, b.data_ptr<float>(),
                  ldb, g.beta, c.data_ptr<float>(), g.n);
  };
  std::vector<double> t;
  for (int i = 0; i < 23; ++i) {
    double total = 0;
    if (cold) {
      for (const G& g : gemms) {
        std::fill(flush.begin(), flush.end(), float(i));
        benchmark::DoNotOptimize(flush.data());
        auto t0 = Clock::now();
        one(g);
        total += seconds_since(t0);
      }
    } else {
      auto t0 = Clock::now();
      for (const G& g : gemms) one(g);
      total = seconds_since(t0);
    }
    if (i >= 3) t.push_back(total);
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

struct Row {
  Library library = Library::openblas;  // the floor's: the fastest sgemm on the machine
  double sgemm_gflops = 0, floor_ms = 0, gemms_ms = 0, cold_gemms_ms = 0, step_ms = 0;
  double in_step_gemms_ms = 0;  // inside loom's gemm kernels during the step
};
std::map<int, Row> g_rows;

void BM_mlp_step(benchmark::State& state) {
  const int threads = int(state.range(0));
  Row& row = g_rows[threads];
  if (row.sgemm_gflops == 0) {
    const auto [library, rate] = best_sgemm(threads);
    row.library = library;
    row.sgemm_gflops = rate / 1e9;
    row.floor_ms = kStepFlops / rate * 1e3;
    row.gemms_ms = step_gemms_seconds(library, false) * 1e3;
    row.cold_gemms_ms = step_gemms_seconds(library, true) * 1e3;
  }
  set_num_threads(threads);
  manual_seed(0);
  auto model = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(784, 1024), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(1024, 1024), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(1024, 10));
  optim::SGD opt(model->parameters(), 0.01);
  Tensor x = randn({kBatch, 784});
  Tensor y = randint(0, 10, {kBatch}, DType::i64);
  auto step = [&] {
    Tensor loss = cross_entropy((*model)(x), y);
    loss.backward();
    opt.step();
    opt.zero_grad();
    return loss;
  };
  for (int i = 0; i < 2; ++i) step();  // warm-up: first-touch of gradients, BLAS buffers
  std::vector<double> times, gemm_times;
  kernels::cpu::set_gemm_timing(true);
  for (auto _ : state) {
    kernels::cpu::reset_gemm_timing();
    auto t0 = Clock::now();
    Tensor loss = step();
    benchmark::DoNotOptimize(loss.raw_data_ptr());
    times.push_back(seconds_since(t0));
    gemm_times.push_back(kernels::cpu::gemm_timing().seconds);
  }
  kernels::cpu::set_gemm_timing(false);
  auto median = [](std::vector<double>& v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  row.step_ms = median(times) * 1e3;
  row.in_step_gemms_ms = median(gemm_times) * 1e3;
  state.counters["median_ms"] = row.step_ms;
  state.counters["floor_ms"] = row.floor_ms;
  state.counters["x_floor"] = row.step_ms / row.floor_ms;
  state.counters["gemms_ms"] = row.gemms_ms;
  state.counters["cold_gemms_ms"] = row.cold_gemms_ms;
  state.counters["in_step_gemms_ms"] = row.in_step_gemms_ms;
  state.counters["GFLOP/s"] =
      benchmark::Counter(kStepFlops * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

BENCHMARK(BM_mlp_step)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  std::printf("\nMLP 784-1024-1024-10, batch %lld, f32 step = %.3f GFLOP\n", (long long)kBatch,
              kStepFlops / 1e9);
  std::printf("%-8s %9s %14s %12s %14s %10s %14s %12s %14s %12s %16s %14s\n", "threads",
              "floor lib", "sgemm GFLOP/s", "floor ms", "step ms (med)", "step/floor", "step GEMMs ms",
              "step/GEMMs", "cold GEMMs ms", "cold/floor", "in-step GEMM ms", "in-step/floor");
  for (const auto& [t, r] : g_rows)
    std::printf("%-8d %9s %14.1f %12.2f %14.2f %10.3f %14.2f %12.3f %14.2f %12.3f %16.2f %14.3f\n",
                t, library_name(r.library), r.sgemm_gflops, r.floor_ms, r.step_ms, r.step_ms / r.floor_ms, r.gemms_ms,
                r.step_ms / r.gemms_ms, r.cold_gemms_ms, r.cold_gemms_ms / r.floor_ms,
                r.in_step_gemms_ms, r.in_step_gemms_ms / r.floor_ms);
  benchmark::Shutdown();
  return 0;
}
