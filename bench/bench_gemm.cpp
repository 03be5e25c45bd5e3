// GEMM throughput: native::matmul against a direct cblas_sgemm on the same buffers, in one
// binary, for 1 and 2 threads; and bf16/f16 matmul at the same size.
//
// The header line is loom::cpu_capability_description() (level, flags, GEMM backends). The
// closing "ratio" lines compare, in the same run, loom's 1024^3 f32 matmul with the best rate
// an installed library reaches on this machine: OpenBLAS as the environment configures it
// (BM_cblas_sgemm), oneDNN's sgemm called directly on one thread (BM_onednn_sgemm), and
// OpenBLAS with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, so that it picks its kernel for this
// CPU (AVX-512 here), measured in a child process (this binary re-run with those two variables
// removed from its environment alone); and loom's bf16 and f16 matmul with its f32 one.
//
// Napkin math: a 1024^3 GEMM is 2 * 1024^3 = 2.15 GFLOP. This machine's ceiling is OpenBLAS
// itself (docs/design.md "Machines": 85 GFLOP/s on 1 thread, 169 on 2), i.e. ~25 ms and
// ~13 ms per GEMM; matmul's overhead (shape logic, one allocation of 4 MiB) should stay within 5% of that.
// The 16-bit variants add the conversion of A, B and C (~3-4 M elements each way) to sgemm.
// The skinny shapes (one dimension of 10) do 5.2 MFLOP each over ~1 MiB of operands: at
// ~100 GFLOP/s their compute is ~50 us, so they are about memory and packing, not FLOPs.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <map>
#include <string>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/gemm_onednn.h"
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

// oneDNN's sgemm straight on the buffers, one thread (how loom calls it per block).
void BM_onednn_sgemm(benchmark::State& state) {
  if (!loom::kernels::cpu::onednn_available()) {
    state.SkipWithError("loom built without oneDNN");
    return;
  }
  loom::manual_seed(0);
  Tensor a = loom::randn({kN, kN}), b = loom::randn({kN, kN}), c = loom::zeros({kN, kN});
  for (auto _ : state) {
    loom::kernels::cpu::onednn_sgemm(false, false, kN, kN, kN, a.data_ptr<float>(), kN,
                                     b.data_ptr<float>(), kN, 0.0f, c.data_ptr<float>(), kN);
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
BENCHMARK(BM_onednn_sgemm)->Unit(benchmark::kMillisecond)->UseRealTime();
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

// Keeps each run's FLOP/s for the closing ratios; prints them only when `echo`. One-thread runs
// are rated by the CPU time of the thread that ran them (FLOP/s x real / CPU time): on a shared
// machine the wall clock also counts the time other processes held the core, which two runs
// minutes apart do not share. Two-thread runs have only the wall clock.
class Collect : public benchmark::ConsoleReporter {
 public:
  explicit Collect(bool echo) : echo_(echo) {}
  std::map<std::string, double> flops;
  bool ReportContext(const Context& context) override {
    return echo_ ? ConsoleReporter::ReportContext(context) : true;
  }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      auto it = r.counters.find("FLOP/s");
      if (it == r.counters.end() || r.error_occurred) continue;
      const std::string name = r.benchmark_name();
      const bool one_thread = name.find("/2/") == std::string::npos;
      const double cpu = r.GetAdjustedCPUTime(), real = r.GetAdjustedRealTime();
      flops[name] = double(it->second) * (one_thread && cpu > 0 ? real / cpu : 1.0);
    }
    if (echo_) ConsoleReporter::ReportRuns(runs);
  }

 private:
  bool echo_;
};

constexpr const char* kChildVar = "LOOM_BENCH_GEMM_BASELINE_CHILD";

// BM_cblas_sgemm's FLOP/s per thread count in a child process without OPENBLAS_CORETYPE and
// OPENBLAS_L2_SIZE (OpenBLAS then picks its kernel for this CPU).
std::map<std::string, double> openblas_unconfigured_rates() {
  std::map<std::string, double> rates;
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return rates;
  self[len] = '\0';
  const std::string cmd = std::string("env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ") + kChildVar +
                          "=1 '" + self + "' --benchmark_filter='^BM_cblas_sgemm/' "
                          "--benchmark_min_time=0.5";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return rates;
  char name[256];
  double value = 0;
  while (std::fscanf(pipe, "baseline %255s %lf\n", name, &value) == 2) rates[name] = value;
  pclose(pipe);
  return rates;
}

}  // namespace

int main(int argc, char** argv) {
  const bool child = std::getenv(kChildVar) != nullptr;
  if (!child) std::printf("%s\n", loom::cpu_capability_description().c_str());
  benchmark::Initialize(&argc, argv);
  Collect reporter(!child);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  if (child) {
    for (const auto& [name, value] : reporter.flops) std::printf("baseline %s %.6g\n", name.c_str(), value);
    return 0;
  }
  auto& r = reporter.flops;
  if (!r.count("BM_matmul/f32/1/real_time")) return 0;
  const std::map<std::string, double> unconfigured = openblas_unconfigured_rates();
  for (const char* threads : {"1", "2"}) {
    const std::string t = std::string("/") + threads + "/real_time";
    const double loom_f32 = r["BM_matmul/f32" + t];
    if (loom_f32 <= 0) continue;
    double best = 0;
    std::string best_name, all;
    auto consider = [&](const std::string& name, double v) {
      if (v <= 0) return;
      char line[128];
      std::snprintf(line, sizeof line, "%s%s %.1f", all.empty() ? "" : ", ", name.c_str(), v * 1e-9);
      all += line;
      if (v > best) best = v, best_name = name;
    };
    consider("OpenBLAS as configured", r["BM_cblas_sgemm" + t]);
    if (std::string(threads) == "1") consider("oneDNN sgemm", r["BM_onednn_sgemm/real_time"]);
    auto it = unconfigured.find("BM_cblas_sgemm" + t);
    if (it != unconfigured.end()) consider("OpenBLAS, OPENBLAS_CORETYPE/L2_SIZE unset", it->second);
    const char* clock = std::string(threads) == "1" ? "CPU" : "wall";
    std::printf("ratio f32  1024^3 %s thread(s) (%s time): loom %.1f GFLOP/s = %.2fx the best library "
                "rate, %s (libraries in GFLOP/s: %s)\n",
                threads, clock, loom_f32 * 1e-9, loom_f32 / best, best_name.c_str(), all.c_str());
    for (const char* low : {"bf16", "f16"}) {
      const double v = r[std::string("BM_matmul/") + low + t];
      if (v > 0)
        std::printf("ratio %-4s 1024^3 %s thread(s) (%s time): %.1f GFLOP/s = %.2fx loom's f32\n", low,
                    threads, clock, v * 1e-9, v / loom_f32);
    }
  }
  return 0;
}
