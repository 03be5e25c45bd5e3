// Softmax family (tensor/native_softmax.cpp) against f64 reference loops, backward against
// central finite differences in f64, every dim and layout, 16-bit dtypes, large logits, meta.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

// f64 reference softmax (or log_softmax) of x along dim, in row-major order of x's shape.
std::vector<double> reference(const Tensor& x, int64_t dim, bool log) {
  Shape s = x.sizes();
  int64_t n = int64_t(s.size());
  if (dim < 0) dim += n;
  int64_t O = 1, R = s[size_t(dim)], I = 1;
  for (int64_t i = 0; i < dim; ++i) O *= s[size_t(i)];
  for (int64_t i = dim + 1; i < n; ++i) I *= s[size_t(i)];
  std::vector<double> v = x.to_double_vector(), out(v.size());
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      auto at = [&](int64_t r) { return size_t((o * R + r) * I + i); };
      double m = -INFINITY, z = 0;
      for (int64_t r = 0; r < R; ++r) m = std::max(m, v[at(r)]);
      for (int64_t r = 0; r < R; ++r) z += std::exp(v[at(r)] - m);
      for (int64_t r = 0; r < R; ++r)
        out[at(r)] = log ? v[at(r)] - m - std::log(z) : std::exp(v[at(r)] - m) / z;
    }
  return out;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << "at " << i;
}

TEST(Softmax, ForwardEveryDimAndLayout) {
  manual_seed(10);
  Tensor x = randn({3, 5, 7}, DType::f64);
  Tensor views[] = {x, native::transpose(x, 0, 2), native::slice(x, 1, 1, 5, 2)};
  for (const Tensor& v : views)
    for (int64_t d : {0, 1, 2, -1})
      for (bool log : {false, true}) {
        Tensor y = log ? native::log_softmax(v, d) : native::softmax(v, d);
        EXPECT_EQ(y.sizes(), v.sizes());
        EXPECT_EQ(y.dtype(), DType::f64);
        expect_close(y.to_double_vector(), reference(v, d, log), 1e-13);
      }
}

TEST(Softmax, F32LongRowsAndLowPrecision) {
  manual_seed(11);
  Tensor x = randn({4, 5000}, DType::f32);
  expect_close(native::softmax(x, 1).to_double_vector(), reference(x, 1, false), 1e-5);
  expect_close(native::log_softmax(x, 0).to_double_vector(), reference(x, 0, true), 1e-5);
  for (DType dt : {DType::f16, DType::bf16}) {
    Tensor h = randn({6, 40, 3}, dt);
    Tensor y = native::softmax(h, 1);
    EXPECT_EQ(y.dtype(), dt);
    // Computed in f32 from the rounded inputs; the only error left is the output rounding.
    expect_close(y.to_double_vector(), reference(h, 1, false), dt == DType::bf16 ? 8e-3 : 1e-3);
    expect_close(native::log_softmax(h, -1).to_double_vector(), reference(h, -1, true),
                 dt == DType::bf16 ? 8e-3 : 1e-3);
  }
}

TEST(Softmax, LargeLogitsStayFinite) {
  Tensor x = tensor({1000.0, 1001.0, 1002.0}, DType::f32);
  auto y = native::softmax(x, 0).to_vector<double>();
  double z = 1 + std::exp(-1.0) + std::exp(-2.0);
  EXPECT_NEAR(y[0], std::exp(-2.0) / z, 1e-6);
  EXPECT_NEAR(y[2], 1 / z, 1e-6);
  auto l = native::log_softmax(tensor({-1000.0, -1001.0, -1002.0}), 0).to_vector<double>();
  EXPECT_NEAR(l[0], -std::log(z), 1e-5);
  EXPECT_NEAR(l[2], -2 - std::log(z), 1e-5);
  Tensor h = tensor({1000.0, 1001.0, 1002.0}, DType::bf16);
  for (double v : native::softmax(h, 0).to_vector<double>()) EXPECT_TRUE(std::isfinite(v));
}

// L(x) = sum(w * f(x)); its gradient is f_backward(w, f(x)).
double loss(const Tensor& x, const Tensor& w, int64_t dim, bool log) {
  Tensor y = log ? native::log_softmax(x, dim) : native::softmax(x, dim);
  auto a = y.to_double_vector(), b = w.to_double_vector();
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(Softmax, BackwardMatchesFiniteDifferences) {
  manual_seed(12);
  for (int64_t d : {0, 1, -1})
    for (bool log : {false, true}) {
      Tensor x = randn({3, 4, 5}, DType::f64);
      Tensor w = randn({3, 4, 5}, DType::f64);
      Tensor y = log ? native::log_softmax(x, d) : native::softmax(x, d);
      Tensor g = log ? native::log_softmax_backward(w, y, d) : native::softmax_backward(w, y, d);
      auto got = g.to_double_vector();
      double* p = x.data_ptr<double>();
      const double h = 1e-6;
      for (int64_t i = 0; i < x.numel(); ++i) {
        double keep = p[i];
        p[i] = keep + h;
        double up = loss(x, w, d, log);
        p[i] = keep - h;
        double down = loss(x, w, d, log);
        p[i] = keep;
        EXPECT_NEAR(got[size_t(i)], (up - down) / (2 * h), 1e-8) << "dim " << d << " i " << i;
      }
    }
}

TEST(Softmax, BackwardNonContiguousAndLowPrecision) {
  manual_seed(13);
  Tensor x = randn({5, 6}, DType::f64);
  Tensor w = randn({6, 5}, DType::f64);
  Tensor wt = native::transpose(w, 0, 1);  // a non-contiguous grad
  Tensor y = native::softmax(x, 1);
  Tensor want = native::softmax_backward(native::contiguous(wt), y, 1);
  EXPECT_TRUE(native::softmax_backward(wt, y, 1).allclose(want, 1e-14, 1e-14));
  Tensor yl = native::log_softmax(x, 0);
  Tensor want_l = native::log_softmax_backward(native::contiguous(wt), yl, 0);
  Tensor yb = native::to(yl, Device::cpu(), DType::bf16);
  Tensor gb = native::log_softmax_backward(native::to(wt, Device::cpu(), DType::bf16), yb, 0);
  EXPECT_EQ(gb.dtype(), DType::bf16);
  EXPECT_TRUE(gb.allclose(want_l, 5e-2, 5e-2));
}

TEST(Softmax, MetaAndErrors) {
  Tensor x = native::empty({512, 1024, 1024}, DType::bf16, Device::meta());
  int64_t before = memory_stats().current_bytes;
  Tensor y = native::softmax(x, -1);
  EXPECT_TRUE(y.is_meta());
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_EQ(y.dtype(), DType::bf16);
  EXPECT_EQ(native::log_softmax_backward(y, y, 0).sizes(), x.sizes());
  EXPECT_EQ(memory_stats().current_bytes, before);
  EXPECT_THAT([] { native::softmax(zeros({2}, DType::i64), 0); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("softmax: expected a floating dtype")));
  EXPECT_THAT([] { native::softmax(zeros({2, 3}), 2); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("dim 2 is out of range")));
  EXPECT_THAT([] { native::softmax_backward(zeros({2, 3}), zeros({3, 2}), 0); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("must have the same shape")));
  EXPECT_THAT([] { native::softmax_backward(zeros({2}), native::empty({2}, DType::f32,
                                                                       Device::meta()), 0); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("one device")));
}

}  // namespace
}  // namespace loom
