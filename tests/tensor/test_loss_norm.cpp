// Cross-entropy (tensor/native_loss.cpp) and layer norm (tensor/native_norm.cpp) against f64
// reference loops; backward against central finite differences in f64; ignore_index, label
// smoothing, every reduction, (C) / (N, C) / (N, C, d) shapes, 16-bit dtypes, meta, errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using native::Reduction;

// Per-position f64 reference losses for logits (N, C, D...) flattened as (N, C, D).
std::vector<double> ce_reference(const Tensor& logits, const Tensor& target, int64_t ignore,
                                 double eps) {
  Shape s = logits.sizes();
  int64_t N = s.size() == 1 ? 1 : s[0], C = s.size() == 1 ? s[0] : s[1], D = 1;
  for (size_t i = 2; i < s.size(); ++i) D *= s[i];
  auto x = logits.to_double_vector();
  auto t = target.to_vector<int64_t>();
  std::vector<double> out;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) {
      int64_t tg = t[size_t(n * D + d)];
      if (tg == ignore) {
        out.push_back(0);
        continue;
      }
      auto at = [&](int64_t c) { return x[size_t((n * C + c) * D + d)]; };
      double z = 0;
      for (int64_t c = 0; c < C; ++c) z += std::exp(at(c));
      double lse = std::log(z), smooth = 0;
      for (int64_t c = 0; c < C; ++c) smooth += (lse - at(c)) / double(C);
      out.push_back((1 - eps) * (lse - at(tg)) + eps * smooth);
    }
  return out;
}

double reduce_reference(const std::vector<double>& l, const Tensor& target, int64_t ignore,
                        Reduction r) {
  double s = 0;
  int64_t count = 0;
  auto t = target.to_vector<int64_t>();
  for (size_t i = 0; i < l.size(); ++i) {
    s += l[i];
    count += t[i] != ignore;
  }
  return r == Reduction::sum ? s : s / double(count);
}

// Central differences of f() with respect to every element of the f64 tensor p.
std::vector<double> finite_diff(const Tensor& p, const std::function<double()>& f) {
  double* d = p.data_ptr<double>();
  std::vector<double> g;
  const double h = 1e-6;
  for (int64_t i = 0; i < p.numel(); ++i) {
    double keep = d[i];
    d[i] = keep + h;
    double up = f();
    d[i] = keep - h;
    double down = f();
    d[i] = keep;
    g.push_back((up - down) / (2 * h));
  }
  return g;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << "at " << i;
}

double dot(const Tensor& a, const Tensor& b) {
  auto x = a.to_double_vector(), y = b.to_double_vector();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

TEST(CrossEntropy, ForwardMatchesReferenceEveryShapeAndReduction) {
  manual_seed(20);
  const int64_t ignore = -100;
  struct Case {
    Shape logits;
    Tensor target;
  };
  Case cases[] = {
      {{5}, from_vector<int64_t>({3}, Shape{})},
      {{4, 5}, from_vector<int64_t>({1, ignore, 4, 0}, Shape{4})},
      {{2, 5, 3}, from_vector<int64_t>({0, 1, 2, ignore, 4, 4}, Shape{2, 3})},
      {{2, 3, 2, 2}, from_vector<int64_t>({0, 1, 2, 0, 2, 2, 1, ignore}, Shape{2, 2, 2})},
  };
  for (auto& c : cases)
    for (double eps : {0.0, 0.1})
      for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
        Tensor x = randn(c.logits, DType::f64);
        Tensor l = native::cross_entropy(x, c.target, ignore, eps, r);
        auto ref = ce_reference(x, c.target, ignore, eps);
        if (r == Reduction::none) {
          EXPECT_EQ(l.sizes(), c.target.sizes());
          expect_close(l.to_double_vector(), ref, 1e-12);
        } else {
          EXPECT_EQ(l.dim(), 0);
          EXPECT_NEAR(l.item<double>(), reduce_reference(ref, c.target, ignore, r), 1e-12);
        }
      }
}

TEST(CrossEntropy, BackwardMatchesFiniteDifferences) {
  manual_seed(21);
  const int64_t ignore = 2;  // a valid class index used as ignore_index, as PyTorch allows
  Tensor target = from_vector<int64_t>({0, 2, 4, 1, 3, 2}, Shape{2, 3});
  for (double eps : {0.0, 0.2})
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      Tensor x = randn({2, 5, 3}, DType::f64);
      Tensor w = r == Reduction::none ? randn({2, 3}, DType::f64) : scalar_tensor(1.7, DType::f64);
      auto f = [&] { return dot(native::cross_entropy(x, target, ignore, eps, r), w); };
      Tensor g = native::cross_entropy_backward(w, x, target, ignore, eps, r);
      EXPECT_EQ(g.sizes(), x.sizes());
      expect_close(g.to_double_vector(), finite_diff(x, f), 1e-7);
      // Ignored positions get exactly zero gradient.
      EXPECT_EQ(g.at<double>({0, 3, 1}), 0.0);
    }
}

TEST(CrossEntropy, AllIgnoredMeanIsNanAndLowPrecision) {
  Tensor x = randn({3, 4});
  Tensor t = from_vector<int64_t>({-1, -1, -1}, Shape{3});
  EXPECT_TRUE(std::isnan(native::cross_entropy(x, t, -1, 0.0, Reduction::mean).item<double>()));
  EXPECT_EQ(native::cross_entropy(x, t, -1, 0.0, Reduction::sum).item<double>(), 0.0);
  manual_seed(22);
  Tensor xb = randn({64, 100}, DType::bf16);
  Tensor tb = randint(0, 100, {64});
  Tensor l = native::cross_entropy(xb, tb, -100, 0.05, Reduction::mean);
  EXPECT_EQ(l.dtype(), DType::bf16);
  double ref = reduce_reference(ce_reference(xb, tb, -100, 0.05), tb, -100, Reduction::mean);
  EXPECT_NEAR(l.item<double>(), ref, 2e-2 * ref);
  Tensor g = native::cross_entropy_backward(scalar_tensor(1.0, DType::bf16), xb, tb, -100, 0.05,
                                            Reduction::mean);
  EXPECT_EQ(g.dtype(), DType::bf16);
  // Each row of the gradient sums to zero (softmax sums to 1, the smoothed target too).
  auto row = native::sum(g, {1}, false, DType::f32).to_vector<double>();
  for (double v : row) EXPECT_NEAR(v, 0.0, 1e-3);
  // Large logits stay finite.
  Tensor big = tensor({1000.0, 1001.0, 1002.0}, DType::f32);
  double v = native::cross_entropy(big, from_vector<int64_t>({0}, Shape{}), -100, 0.0,
                                   Reduction::mean)
                 .item<double>();
  EXPECT_NEAR(v, 2 + std::log(1 + std::exp(-1.0) + std::exp(-2.0)), 1e-5);
}

TEST(CrossEntropy, NonContiguousLogits) {
  manual_seed(23);
  Tensor base = randn({5, 4}, DType::f64);
  Tensor x = native::transpose(base, 0, 1);  // (4, 5), non-contiguous
  Tensor t = from_vector<int64_t>({4, 0, 1, 3}, Shape{4});
  Tensor want = native::cross_entropy(native::contiguous(x), t, -100, 0.1, Reduction::none);
  EXPECT_TRUE(native::cross_entropy(x, t, -100, 0.1, Reduction::none).allclose(want, 1e-14, 0));
}

TEST(CrossEntropy, MetaAndErrors) {
  Tensor x = native::empty({4096, 50000}, DType::bf16, Device::meta());
  Tensor t = native::empty({4096}, DType::i64, Device::meta());
  int64_t before = memory_stats().current_bytes;
  Tensor l = native::cross_entropy(x, t, -100, 0.0, Reduction::none);
  EXPECT_TRUE(l.is_meta());
  EXPECT_EQ(l.sizes(), (Shape{4096}));
  EXPECT_EQ(l.dtype(), DType::bf16);
  EXPECT_EQ(native::cross_entropy(x, t, -100, 0.0, Reduction::mean).sizes(), Shape{});
  Tensor g = native::cross_entropy_backward(native::empty({}, DType::bf16, Device::meta()), x, t,
                                            -100, 0.0, Reduction::mean);
  EXPECT_EQ(g.sizes(), x.sizes());
  EXPECT_EQ(memory_stats().current_bytes, before);

  Tensor logits = zeros({3, 5});
  EXPECT_THAT([&] { native::cross_entropy(logits, tensor({0, 7, 1}), -100, 0.0, Reduction::mean); },
              ::testing::ThrowsMessage<ValueError>(
                  HasSubstr("target 7 is out of bounds for C = 5 classes")));
  EXPECT_THAT([&] { native::cross_entropy(logits, tensor({0, -3, 1}), -100, 0.0, Reduction::sum); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("target -3 is out of bounds")));
  EXPECT_THAT([&] { native::cross_entropy(logits, tensor({0, 1}), -100, 0.0, Reduction::sum); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("does not match logits [3, 5]")));
  EXPECT_THAT([&] { native::cross_entropy(logits, zeros({3}), -100, 0.0, Reduction::sum); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("i64 class indices")));
  EXPECT_THAT([&] { native::cross_entropy(logits, tensor({0, 1, 2}), -100, 1.5, Reduction::sum); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("label_smoothing")));
  EXPECT_THAT([&] { native::cross_entropy(logits, t, -100, 0.0, Reduction::sum); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("one device")));
}

// f64 reference layer norm over the last K values; returns y.
std::vector<double> ln_reference(const Tensor& x, int64_t K, const Tensor& w, const Tensor& b,
                                 double eps) {
  auto v = x.to_double_vector();
  std::vector<double> wv = w.defined() ? w.to_double_vector() : std::vector<double>(size_t(K), 1);
  std::vector<double> bv = b.defined() ? b.to_double_vector() : std::vector<double>(size_t(K), 0);
  std::vector<double> y(v.size());
  for (size_t m = 0; m < v.size() / size_t(K); ++m) {
    double mu = 0, var = 0;
    for (int64_t k = 0; k < K; ++k) mu += v[m * size_t(K) + size_t(k)] / double(K);
    for (int64_t k = 0; k < K; ++k) {
      double d = v[m * size_t(K) + size_t(k)] - mu;
      var += d * d / double(K);
    }
    for (int64_t k = 0; k < K; ++k)
      y[m * size_t(K) + size_t(k)] =
          (v[m * size_t(K) + size_t(k)] - mu) / std::sqrt(var + eps) * wv[size_t(k)] + bv[size_t(k)];
  }
  return y;
}

TEST(LayerNorm, ForwardMatchesReference) {
  manual_seed(30);
  Tensor x = randn({3, 4, 6}, DType::f64);
  Tensor w = randn({4, 6}, DType::f64), b = randn({4, 6}, DType::f64);
  auto [y, mean, rstd] = native::layer_norm(x, {4, 6}, w, b, 1e-5);
  EXPECT_EQ(mean.sizes(), (Shape{3}));
  EXPECT_EQ(rstd.dtype(), DType::f64);
  expect_close(y.to_double_vector(), ln_reference(x, 24, w, b, 1e-5), 1e-12);
  auto [y2, m2, r2] = native::layer_norm(x, {6}, Tensor(), Tensor(), 1e-5);
  EXPECT_EQ(m2.sizes(), (Shape{3, 4}));
  expect_close(y2.to_double_vector(), ln_reference(x, 6, Tensor(), Tensor(), 1e-5), 1e-12);
  // A non-contiguous input and a 16-bit one.
  Tensor xt = native::transpose(randn({6, 5}, DType::f64), 0, 1);
  auto [y3, m3, r3] = native::layer_norm(xt, {6}, Tensor(), Tensor(), 1e-5);
  expect_close(y3.to_double_vector(), ln_reference(xt, 6, Tensor(), Tensor(), 1e-5), 1e-12);
  Tensor xh = randn({8, 64}, DType::bf16);
  Tensor wh = randn({64}, DType::bf16);
  auto [yh, mh, rh] = native::layer_norm(xh, {64}, wh, Tensor(), 1e-5);
  EXPECT_EQ(yh.dtype(), DType::bf16);
  EXPECT_EQ(mh.dtype(), DType::f32);
  EXPECT_EQ(rh.dtype(), DType::f32);
  expect_close(yh.to_double_vector(), ln_reference(xh, 64, wh, Tensor(), 1e-5), 2e-2);
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  manual_seed(31);
  for (bool affine : {true, false}) {
    Tensor x = randn({2, 3, 5}, DType::f64);
    Tensor w = affine ? randn({3, 5}, DType::f64) : Tensor();
    Tensor b = affine ? randn({3, 5}, DType::f64) : Tensor();
    Tensor g = randn({2, 3, 5}, DType::f64);
    auto f = [&] { return dot(std::get<0>(native::layer_norm(x, {3, 5}, w, b, 1e-5)), g); };
    auto [y, mean, rstd] = native::layer_norm(x, {3, 5}, w, b, 1e-5);
    auto [gx, gw, gb] = native::layer_norm_backward(g, x, {3, 5}, mean, rstd, w, b);
    expect_close(gx.to_double_vector(), finite_diff(x, f), 1e-7);
    EXPECT_EQ(gw.defined(), affine);
    EXPECT_EQ(gb.defined(), affine);
    if (affine) {
      expect_close(gw.to_double_vector(), finite_diff(w, f), 1e-7);
      expect_close(gb.to_double_vector(), finite_diff(b, f), 1e-7);
    }
  }
}

TEST(LayerNorm, BackwardManyRowsAndLowPrecision) {
  manual_seed(32);
  // 300 rows cross the backward's row blocks; compare f32 and bf16 with the f64 result.
  Tensor x = randn({300, 48}, DType::f64), w = randn({48}, DType::f64), b = randn({48}, DType::f64);
  Tensor g = randn({300, 48}, DType::f64);
  auto [y, mean, rstd] = native::layer_norm(x, {48}, w, b, 1e-5);
  auto [gx, gw, gb] = native::layer_norm_backward(g, x, {48}, mean, rstd, w, b);
  for (DType dt : {DType::f32, DType::bf16}) {
    auto cast = [&](const Tensor& t) { return native::to(t, Device::cpu(), dt); };
    auto [yl, ml, rl] = native::layer_norm(cast(x), {48}, cast(w), cast(b), 1e-5);
    auto [gxl, gwl, gbl] = native::layer_norm_backward(cast(g), cast(x), {48}, ml, rl, cast(w),
                                                       cast(b));
    double tol = dt == DType::f32 ? 1e-4 : 5e-2;
    EXPECT_EQ(gwl.dtype(), dt);
    EXPECT_TRUE(gxl.allclose(gx, tol, tol));
    EXPECT_TRUE(gwl.allclose(gw, tol, tol * 10));
    EXPECT_TRUE(gbl.allclose(gb, tol, tol * 10));
  }
  // The f32 weight of a bf16 model keeps its dtype in the gradient.
  auto [yb, mb, rb] = native::layer_norm(native::to(x, Device::cpu(), DType::bf16), {48},
                                         native::to(w, Device::cpu(), DType::f32), Tensor(), 1e-5);
  EXPECT_EQ(yb.dtype(), DType::bf16);
}

TEST(LayerNorm, MetaAndErrors) {
  Tensor x = native::empty({64, 1024, 4096}, DType::bf16, Device::meta());
  Tensor w = native::empty({4096}, DType::bf16, Device::meta());
  int64_t before = memory_stats().current_bytes;
  auto [y, mean, rstd] = native::layer_norm(x, {4096}, w, w, 1e-5);
  EXPECT_TRUE(y.is_meta());
  EXPECT_EQ(y.dtype(), DType::bf16);
  EXPECT_EQ(mean.sizes(), (Shape{64, 1024}));
  EXPECT_EQ(rstd.dtype(), DType::f32);
  auto [gx, gw, gb] = native::layer_norm_backward(y, x, {4096}, mean, rstd, w, Tensor());
  EXPECT_EQ(gx.sizes(), x.sizes());
  EXPECT_EQ(gw.sizes(), (Shape{4096}));
  EXPECT_FALSE(gb.defined());
  EXPECT_EQ(memory_stats().current_bytes, before);
  EXPECT_THAT([] { native::layer_norm(zeros({2, 3}), {4}, Tensor(), Tensor(), 1e-5); },
              ::testing::ThrowsMessage<ValueError>(
                  HasSubstr("normalized_shape [4] does not match the trailing dims of input [2, 3]")));
  EXPECT_THAT([] { native::layer_norm(zeros({2, 3}), {3}, zeros({4}), Tensor(), 1e-5); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("weight has shape [4]")));
  EXPECT_THAT([] { native::layer_norm(zeros({2, 3}, DType::i64), {3}, Tensor(), Tensor(), 1e-5); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("expected a floating input")));
  EXPECT_THAT([&] { native::layer_norm(zeros({2, 4096}), {4096}, w, Tensor(), 1e-5); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("one device")));
}

}  // namespace
}  // namespace loom
