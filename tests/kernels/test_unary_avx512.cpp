// The AVX-512 variants of the compute-bound f32 unary kernels (kernels/cpu/unary_avx512.h)
// against the baseline variant and against the exact function in double, forward and
// backward. Eigen's AVX-512 and AVX2 approximations differ, so neither is the reference: both
// must satisfy |y - exact| <= 4e-6 |exact| + a (|x| + |x|^3), where a = 0 except for the two
// GELUs (a = 2.5e-7: 0.5 x (1 + tanh u) and 0.5 x (1 + erf(x / sqrt 2)) cancel for large
// negative x, where f32 keeps nothing below ulp(1) |x| / 2, and their derivatives carry a
// further x^2), and each variant is reproducible and independent of the thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/threads_guard.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom {
namespace {

struct OpCase {
  native::UnaryOp op;
  const char* name;
  double lo, hi;
  double (*exact)(double);
  double (*derivative)(double);
  double abs_per_x = 0;  // the a of the bound above
};

double gelu_tanh(double x) {
  return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
double gelu_tanh_d(double x) {
  const double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}
double gelu_erf(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_erf_d(double x) {
  return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
}
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

const OpCase kOps[] = {
    {native::UnaryOp::exp, "exp", -87, 88, [](double x) { return std::exp(x); }, nullptr},
    {native::UnaryOp::log, "log", 1e-30, 1e30, [](double x) { return std::log(x); }, nullptr},
    {native::UnaryOp::tanh, "tanh", -12, 12, [](double x) { return std::tanh(x); }, nullptr},
    {native::UnaryOp::sigmoid, "sigmoid", -40, 40, sigmoid, nullptr},
    {native::UnaryOp::gelu_tanh, "gelu_tanh", -12, 12, gelu_tanh, gelu_tanh_d, 2.5e-7},
    {native::UnaryOp::gelu_erf, "gelu_erf", -12, 12, gelu_erf, gelu_erf_d, 2.5e-7},
};

// n values spread over [lo, hi] (geometrically for log's positive range), plus a few exact
// points the approximations special-case.
std::vector<float> inputs(const OpCase& c, int n) {
  std::vector<float> x;
  for (int i = 0; i < n; ++i) {
    const double t = (i + 0.5) / n;
    x.push_back(c.lo > 0 ? float(c.lo * std::pow(c.hi / c.lo, t)) : float(c.lo + (c.hi - c.lo) * t));
  }
  for (float v : {0.0f, 1.0f, -1.0f, 0.5f, 1e-3f, -1e-3f})
    if (v >= c.lo && v <= c.hi) x.push_back(v);
  return x;
}

Tensor tensor_of(const std::vector<float>& v) {
  Tensor t = empty({int64_t(v.size())}, DType::f32);
  std::copy(v.begin(), v.end(), t.data_ptr<float>());
  return t;
}

void expect_close_to(const Tensor& y, const std::vector<float>& x, double (*f)(double),
                     double abs_per_x, const std::string& what) {
  const float* p = y.data_ptr<float>();
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = f(double(x[i]));
    ASSERT_NEAR(p[i], e, 4e-6 * std::abs(e) + abs_per_x * (std::abs(double(x[i])) + std::pow(std::abs(double(x[i])), 3)) + 1e-38)
        << what << " at x = " << x[i];
  }
}

TEST(UnaryAvx512, BothVariantsStayWithinTheBoundOfTheExactFunction) {
  if (max_cpu_level_index() < int(CpuLevel::avx512)) GTEST_SKIP() << "no AVX-512 here";
  ThreadsGuard restore;
  for (const OpCase& c : kOps) {
    const std::vector<float> x = inputs(c, 20000);
    const Tensor xt = tensor_of(x);
    Tensor y[2];
    for (int v = 0; v < 2; ++v) {
      CpuLevelGuard cap{v == 0 ? CpuLevel::avx2 : CpuLevel::avx512};
      const std::string what = std::string(c.name) + (v == 0 ? " (avx2)" : " (avx512)");
      set_num_threads(1);
      y[v] = native::unary(c.op, xt);
      set_num_threads(2);
      EXPECT_TRUE(y[v].equal(native::unary(c.op, xt))) << what << ": depends on the thread count";
      expect_close_to(y[v], x, c.exact, c.abs_per_x, what);
      if (c.derivative) {
        const Tensor g = native::unary_backward(c.op, ones_like(xt), xt, y[v]);
        expect_close_to(g, x, c.derivative, c.abs_per_x, what + " backward");
      }
    }
  }
}

// Transcendental ops at every level give the same bits at 1 and 2 threads, also where the
// second thread's chunk starts off Eigen's packet alignment (kernels/cpu/eigen_blocks.h): exp
// over 3 * 2^19 + 5 values differed between 1 and 2 threads before.
TEST(UnaryAvx512, TranscendentalOpsDoNotDependOnTheThreadCountAtAnyLevel) {
  ThreadsGuard restore;
  std::vector<float> x(size_t(3 * (1 << 19) + 5));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(double(i) * 0.37) * 6.0);
  const Tensor xt = tensor_of(x);
  for (CpuLevel level : {CpuLevel::avx2, CpuLevel(max_cpu_level_index())}) {
    CpuLevelGuard cap{level};
    for (native::UnaryOp op : {native::UnaryOp::exp, native::UnaryOp::tanh, native::UnaryOp::gelu_erf}) {
      set_num_threads(1);
      const Tensor one = native::unary(op, xt);
      set_num_threads(2);
      EXPECT_TRUE(one.equal(native::unary(op, xt)))
          << "op " << int(op) << " at " << to_string(level);
    }
  }
}

}  // namespace
}  // namespace loom
