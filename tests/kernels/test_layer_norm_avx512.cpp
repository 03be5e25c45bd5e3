// f32 layer norm, forward and backward, at the avx2 and avx512 levels
// (kernels/cpu/layer_norm_avx512.h) against an f64 evaluation of the formulas of
// kernels/cpu/layer_norm.h: y, mean, rstd and grad_x within 2e-5 relative to the row's scale,
// grad_w and grad_b within 2e-5 relative to the sum of |terms|; each level reproducible and
// independent of the thread count. Row lengths cover the 16-lane blocks' full, paired and
// masked tails; rows carry an offset so that the mean is not zero.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/threads_guard.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

struct Reference {
  std::vector<double> y, mean, rstd, gx, gw, gb, gw_abs, gb_abs;
};

Reference reference(const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<double>& b, const std::vector<double>& g, int64_t M,
                    int64_t K, double eps) {
  Reference r;
  r.y.resize(size_t(M * K));
  r.gx.resize(size_t(M * K));
  r.gw.assign(size_t(K), 0);
  r.gb.assign(size_t(K), 0);
  r.gw_abs.assign(size_t(K), 0);
  r.gb_abs.assign(size_t(K), 0);
  for (int64_t m = 0; m < M; ++m) {
    auto at = [&](int64_t k) { return size_t(m * K + k); };
    double mu = 0, var = 0;
    for (int64_t k = 0; k < K; ++k) mu += x[at(k)];
    mu /= double(K);
    for (int64_t k = 0; k < K; ++k) var += (x[at(k)] - mu) * (x[at(k)] - mu);
    const double rs = 1.0 / std::sqrt(var / double(K) + eps);
    r.mean.push_back(mu);
    r.rstd.push_back(rs);
    double a = 0, c = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double xh = (x[at(k)] - mu) * rs, gh = g[at(k)] * w[size_t(k)];
      r.y[at(k)] = xh * w[size_t(k)] + b[size_t(k)];
      a += gh;
      c += gh * xh;
      r.gw[size_t(k)] += g[at(k)] * xh;
      r.gb[size_t(k)] += g[at(k)];
      r.gw_abs[size_t(k)] += std::abs(g[at(k)] * xh);
      r.gb_abs[size_t(k)] += std::abs(g[at(k)]);
    }
    a /= double(K);
    c /= double(K);
    for (int64_t k = 0; k < K; ++k) {
      const double xh = (x[at(k)] - mu) * rs, gh = g[at(k)] * w[size_t(k)];
      r.gx[at(k)] = rs * (gh - a - xh * c);
    }
  }
  return r;
}

// |got - want| <= tol * scale, element by element.
void expect_close(const Tensor& got, const std::vector<double>& want,
                  const std::vector<double>& scale, double tol, const std::string& what) {
  std::vector<double> v = got.to_double_vector();
  ASSERT_EQ(v.size(), want.size()) << what;
  for (size_t i = 0; i < v.size(); ++i)
    ASSERT_LE(std::abs(v[i] - want[i]), tol * scale[i % scale.size()])
        << what << " at " << i << ": " << v[i] << " vs " << want[i];
}

TEST(LayerNormAvx512, EveryLevelMatchesTheReferenceAndIgnoresTheThreadCount) {
  ThreadsGuard restore;
  manual_seed(47);
  const double eps = 1e-5;
  for (int64_t K : {1, 7, 16, 17, 31, 32, 33, 48, 256, 1000}) {
    const int64_t M = 37;
    Tensor x = native::binary(native::BinaryOp::add, randn({M, K}),
                              native::wrap_scalar(3.0, randn({1})));
    Tensor w = randn({K}), b = randn({K}), g = randn({M, K});
    const Reference ref = reference(x.to_double_vector(), w.to_double_vector(),
                                    b.to_double_vector(), g.to_double_vector(), M, K, eps);
    // Scales: a row's outputs are O(|w| + |b|) and O(rstd |g| |w|); use per-row maxima.
    std::vector<double> y_scale, gx_scale;
    for (int64_t m = 0; m < M; ++m) {
      double ys = 1, gs = 1;
      for (int64_t k = 0; k < K; ++k) {
        ys = std::max(ys, std::abs(ref.y[size_t(m * K + k)]));
        gs = std::max(gs, std::abs(ref.gx[size_t(m * K + k)]));
      }
      y_scale.push_back(ys);
      gx_scale.push_back(gs);
    }
    std::vector<double> y_scale_el, gx_scale_el;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        y_scale_el.push_back(y_scale[size_t(m)]);
        gx_scale_el.push_back(gx_scale[size_t(m)]);
      }
    std::vector<double> gw_scale, gb_scale;
    for (int64_t k = 0; k < K; ++k) {
      gw_scale.push_back(std::max(1.0, ref.gw_abs[size_t(k)]));
      gb_scale.push_back(std::max(1.0, ref.gb_abs[size_t(k)]));
    }
    std::vector<double> mean_scale(size_t(M), 4.0), rstd_scale(ref.rstd);
    for (CpuLevel level : {CpuLevel::avx2, CpuLevel::avx512}) {
      if (int(level) > max_cpu_level_index()) continue;
      CpuLevelGuard cap{level};
      const std::string what = "K " + std::to_string(K) + " at " + to_string(level);
      set_num_threads(1);
      auto [y1, mean1, rstd1] = native::layer_norm(x, {K}, w, b, eps);
      auto [gx1, gw1, gb1] = native::layer_norm_backward(g, x, {K}, mean1, rstd1, w, b);
      set_num_threads(2);
      auto [y2, mean2, rstd2] = native::layer_norm(x, {K}, w, b, eps);
      auto [gx2, gw2, gb2] = native::layer_norm_backward(g, x, {K}, mean2, rstd2, w, b);
      EXPECT_TRUE(y1.equal(y2) && mean1.equal(mean2) && rstd1.equal(rstd2))
          << what << ": the forward depends on the thread count";
      EXPECT_TRUE(gx1.equal(gx2) && gw1.equal(gw2) && gb1.equal(gb2))
          << what << ": the backward depends on the thread count";
      expect_close(y1, ref.y, y_scale_el, 2e-5, what + " y");
      expect_close(mean1, ref.mean, mean_scale, 2e-6, what + " mean");
      expect_close(rstd1, ref.rstd, rstd_scale, 2e-5, what + " rstd");
      expect_close(gx1, ref.gx, gx_scale_el, 2e-5, what + " grad_x");
      expect_close(gw1, ref.gw, gw_scale, 2e-5, what + " grad_w");
      expect_close(gb1, ref.gb, gb_scale, 2e-5, what + " grad_b");
    }
  }
}

// Without affine parameters, the avx512 rows take the null weight and bias paths.
TEST(LayerNormAvx512, WithoutWeightAndBiasMatchesTheBaseline) {
  ThreadsGuard restore;
  manual_seed(48);
  if (int(CpuLevel::avx512) > max_cpu_level_index())
    GTEST_SKIP() << "this CPU has no AVX-512: " << cpu_capability_description();
  Tensor x = randn({9, 70}), g = randn({9, 70});
  auto run = [&](CpuLevel level) {
    CpuLevelGuard cap{level};
    auto [y, mean, rstd] = native::layer_norm(x, {70}, Tensor(), Tensor(), 1e-5);
    auto [gx, gw, gb] = native::layer_norm_backward(g, x, {70}, mean, rstd, Tensor(), Tensor());
    EXPECT_FALSE(gw.defined() || gb.defined());
    return std::pair{y, gx};
  };
  auto [y2, gx2] = run(CpuLevel::avx2);
  auto [y5, gx5] = run(CpuLevel::avx512);
  EXPECT_TRUE(y5.allclose(y2, 2e-5, 2e-5)) << "forward";
  EXPECT_TRUE(gx5.allclose(gx2, 2e-5, 2e-5)) << "backward";
}

}  // namespace
}  // namespace loom
