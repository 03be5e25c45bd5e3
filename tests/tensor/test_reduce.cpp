// Reductions (tensor/native_reduce.cpp) against f64 reference loops written here: every dim
// subset with and without keepdim, non-contiguous inputs, dtype rules, 16-bit accuracy,
// NaN propagation, ties, sum_to, meta inputs and error messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/cpu/parallel.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

enum class Ref { sum, mean, var, amax, amin };

// f64 reference of a reduction of x over `dims` (keepdim = true shape), by brute force: each
// element is added into the output whose index equals its own with the reduced dims zeroed.
std::vector<double> reference(const Tensor& x, const Shape& dims, Ref op, int64_t correction = 1) {
  std::vector<double> v = x.to_double_vector();
  Shape sizes = x.sizes();
  int64_t n = int64_t(sizes.size());
  std::vector<bool> red(size_t(n), dims.empty());
  for (int64_t d : dims) red[size_t(d < 0 ? d + n : d)] = true;
  Shape out_sizes = sizes;
  for (int64_t i = 0; i < n; ++i)
    if (red[size_t(i)]) out_sizes[size_t(i)] = 1;
  int64_t m = shape_numel(out_sizes);
  Shape ost = contiguous_strides(out_sizes);
  std::vector<std::vector<double>> groups(static_cast<size_t>(m));
  Shape idx(size_t(n), 0);
  for (size_t k = 0; k < v.size(); ++k) {
    int64_t o = 0;
    for (int64_t i = 0; i < n; ++i)
      if (!red[size_t(i)]) o += idx[size_t(i)] * ost[size_t(i)];
    groups[size_t(o)].push_back(v[k]);
    for (int64_t i = n - 1; i >= 0; --i) {
      if (++idx[size_t(i)] < sizes[size_t(i)]) break;
      idx[size_t(i)] = 0;
    }
  }
  std::vector<double> out;
  for (auto& g : groups) {
    double s = 0;
    for (double e : g) s += e;
    double mu = s / double(g.size());
    double r = 0;
    switch (op) {
      case Ref::sum: r = s; break;
      case Ref::mean: r = mu; break;
      case Ref::var: {
        double ss = 0;
        for (double e : g) ss += (e - mu) * (e - mu);
        r = ss / double(std::max<int64_t>(0, int64_t(g.size()) - correction));
        break;
      }
      case Ref::amax: r = *std::max_element(g.begin(), g.end()); break;
      case Ref::amin: r = *std::min_element(g.begin(), g.end()); break;
    }
    out.push_back(r);
  }
  return out;
}

Shape out_shape(const Shape& sizes, const Shape& dims, bool keepdim) {
  int64_t n = int64_t(sizes.size());
  Shape out;
  for (int64_t i = 0; i < n; ++i) {
    bool red = dims.empty();
    for (int64_t d : dims) red |= (d < 0 ? d + n : d) == i;
    if (!red) out.push_back(sizes[size_t(i)]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << "at " << i;
}

Tensor apply(Ref op, const Tensor& x, const Shape& dims, bool keepdim) {
  switch (op) {
    case Ref::sum: return native::sum(x, dims, keepdim);
    case Ref::mean: return native::mean(x, dims, keepdim);
    case Ref::var: return native::var(x, dims, 1, keepdim);
    case Ref::amax: return native::amax(x, dims, keepdim);
    case Ref::amin: return native::amin(x, dims, keepdim);
  }
  return {};
}

TEST(Reduce, AllDimSubsetsKeepdimContiguousAndNot) {
  manual_seed(1);
  Tensor base = randn({3, 4, 5}, DType::f64);
  // A permuted view and a strided slice exercise the copy path of every subset.
  Tensor views[] = {base, native::permute(base, {2, 0, 1}),
                    native::slice(randn({3, 8, 5}, DType::f64), 1, 0, 8, 2)};
  std::vector<Shape> subsets = {{}, {0}, {1}, {2}, {-1}, {0, 1}, {0, 2}, {1, 2}, {2, 0}, {0, 1, 2}};
  for (const Tensor& x : views)
    for (Ref op : {Ref::sum, Ref::mean, Ref::var, Ref::amax, Ref::amin})
      for (const Shape& dims : subsets)
        for (bool keepdim : {false, true}) {
          Tensor got = apply(op, x, dims, keepdim);
          EXPECT_EQ(got.sizes(), out_shape(x.sizes(), dims, keepdim));
          EXPECT_EQ(got.dtype(), DType::f64);
          expect_near_all(got.to_double_vector(), reference(x, dims, op), 1e-12);
        }
}

TEST(Reduce, F32LongRowsAndColumnsAreAccurate) {
  manual_seed(2);
  for (Shape shape : {Shape{3, 200001}, Shape{70001, 3}, Shape{2, 5000, 67}, Shape{3, 40, 1100},
                      Shape{9, 300, 20}}) {
    Tensor x = randn(shape, DType::f32);
    for (Shape dims : {Shape{}, Shape{0}, Shape{-1}, Shape{1}}) {
      if (dims.size() == 1 && dims[0] == 1 && shape.size() == 2) continue;
      expect_near_all(native::sum(x, dims, false).to_double_vector(), reference(x, dims, Ref::sum),
                      2e-5);
      expect_near_all(native::var(x, dims, 1, false).to_double_vector(),
                      reference(x, dims, Ref::var), 1e-5);
    }
  }
}

TEST(Reduce, SumOfOnesIsExactInEveryFloatDtypeAndThreadCount) {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (DType dt : {DType::f32, DType::f16, DType::bf16, DType::f64}) {
      // bf16 cannot hold 1e5 exactly (it rounds to 99840); an f32 result can.
      Tensor s = native::sum(ones({100000}, dt), {}, false, DType::f32);
      EXPECT_EQ(s.item<double>(), 100000.0) << dt;
      // Accumulating in f16 would overflow (1e5 > 65504) and in bf16 stall at 256; in f32
      // the sum is exact and the only rounding is the final one to the output dtype.
      float rounded = dt == DType::bf16 ? bf16_to_f32(f32_to_bf16(1e5f))
                      : dt == DType::f16 ? std::numeric_limits<float>::infinity()
                                         : 1e5f;
      EXPECT_EQ(native::sum(ones({100000}, dt), {}, false).item<double>(), rounded) << dt;
      Tensor m = native::mean(ones({100000}, dt), {}, false);
      EXPECT_EQ(m.item<double>(), 1.0) << dt;
      EXPECT_EQ(m.dtype(), dt);
    }
    // 0.1f summed 16M times: a naive f32 loop stops growing at 2^21 (ulp 0.25 > 0.1 / 2);
    // the blocked pairwise sum stays within a few parts in 1e6.
    Tensor big = full({1 << 24}, 0.1, DType::f32);
    EXPECT_NEAR(native::sum(big, {}, false).item<double>(), 0.1f * double(1 << 24), 4.0);
  }
  set_num_threads(2);
}

TEST(Reduce, HalfSumsAccumulateInF32) {
  manual_seed(3);
  Tensor x = randn({64, 300}, DType::bf16);
  Tensor s = native::sum(x, {1}, false);
  EXPECT_EQ(s.dtype(), DType::bf16);
  // The only error is the final rounding to bf16 (8 bits of mantissa).
  expect_near_all(s.to_double_vector(), reference(x, {1}, Ref::sum), 1.0 / 128);
  Tensor h = randn({300, 64}, DType::f16);
  expect_near_all(native::sum(h, {0}, false, DType::f32).to_double_vector(),
                  reference(h, {0}, Ref::sum), 1e-6);
  expect_near_all(native::var(h, {0}, 1, false).to_double_vector(), reference(h, {0}, Ref::var),
                  2e-3);
}

TEST(Reduce, IntegerSumsGiveI64AndDtypeArgument) {
  Tensor x = from_vector<int32_t>({1, 2, 3, 2000000000, 2000000000, 6}, Shape{2, 3});
  Tensor s = native::sum(x, {1}, false);
  EXPECT_EQ(s.dtype(), DType::i64);
  EXPECT_EQ(s.to_vector<int64_t>(), (std::vector<int64_t>{6, 4000000006}));
  Tensor b = from_vector<bool>({true, false, true, true}, Shape{4});
  EXPECT_EQ(native::sum(b, {}, false).item<int64_t>(), 3);
  EXPECT_EQ(native::sum(b, {}, false).dtype(), DType::i64);
  Tensor f = native::sum(x, {0}, false, DType::f64);
  EXPECT_EQ(f.dtype(), DType::f64);
  EXPECT_EQ(f.to_vector<double>(), (std::vector<double>{2000000001, 2000000002, 9}));
  EXPECT_EQ(native::amax(x, {}, false).item<int64_t>(), 2000000000);
  EXPECT_EQ(native::amin(x, {1}, true).sizes(), (Shape{2, 1}));
}

TEST(Reduce, VarCorrection) {
  Tensor x = tensor({1.0, 2.0, 3.0, 4.0}, DType::f64);
  EXPECT_DOUBLE_EQ(native::var(x, {}, 1, false).item<double>(), 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(native::var(x, {}, 0, false).item<double>(), 5.0 / 4.0);
  EXPECT_DOUBLE_EQ(native::var(x, {}, 2, false).item<double>(), 5.0 / 2.0);
  // One element with correction 1: 0 / 0, as PyTorch.
  EXPECT_TRUE(std::isnan(native::var(tensor({3.0}), {}, 1, false).item<double>()));
  // Large offset: the two-pass formula keeps the digits a one-pass E[x^2] - E[x]^2 loses.
  Tensor y = tensor({1e4 + 1, 1e4 + 2, 1e4 + 3}, DType::f32);
  EXPECT_NEAR(native::var(y, {}, 1, false).item<double>(), 1.0, 1e-3);
}

TEST(Reduce, NanPropagatesAndTiesPickFirstIndex) {
  double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor x = from_vector<float>({1, 5, 5, 2, 3, float(nan), 7, 3, 0, 0, -1, -1}, Shape{3, 4});
  auto amax = native::amax(x, {1}, false).to_vector<double>();
  EXPECT_EQ(amax[0], 5);
  EXPECT_TRUE(std::isnan(amax[1]));
  EXPECT_EQ(amax[2], 0);
  EXPECT_TRUE(std::isnan(native::amin(x, {}, false).item<double>()));
  auto [v, i] = native::max_dim(x, 1, false);
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 0}));
  EXPECT_TRUE(std::isnan(v.to_vector<double>()[1]));
  auto [mv, mi] = native::min_dim(x, 1, true);
  EXPECT_EQ(mi.sizes(), (Shape{3, 1}));
  EXPECT_EQ(mi.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(mv.to_vector<double>()[2], -1);
  // Along dim 0 (the I > 1 path) and on a transposed view.
  EXPECT_EQ(native::argmax(x, 0, false).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1, 1}));
  Tensor t = native::transpose(x, 0, 1);
  EXPECT_EQ(native::argmax(t, 1, false).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(native::argmax(x, -1, false).dtype(), DType::i64);
}

TEST(Reduce, LongRowsNanAndInfinity) {
  // Long enough for the vectorised lanes of the max and for chunked parallel rows.
  std::vector<float> v(300000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 1000) - 500.0f;
  v[1234] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(native::amax(from_vector(v), {}, false).item<double>()));
  EXPECT_EQ(native::amin(from_vector(v), {}, false).item<double>(), -500.0);
  v[250000] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(native::amax(from_vector(v), {}, false).item<double>()));
  EXPECT_TRUE(std::isnan(native::amin(from_vector(v), {}, false).item<double>()));
  auto [val, idx] = native::max_dim(from_vector(v), 0, false);
  EXPECT_EQ(idx.item<int64_t>(), 250000);
}

TEST(Reduce, MaxDimMatchesReferenceInEveryLayout) {
  manual_seed(4);
  Tensor x = randn({4, 70, 630}, DType::f32);  // 630 > one block of columns
  for (int64_t d = 0; d < 3; ++d) {
    auto [v, i] = native::max_dim(x, d, false);
    EXPECT_TRUE(v.equal(native::amax(x, {d}, false)));
    Tensor vi = native::amin(native::transpose(x, 0, 2), {2 - d}, false);
    auto [mv, mi] = native::min_dim(native::transpose(x, 0, 2), 2 - d, false);
    EXPECT_TRUE(mv.equal(vi));
    // Gather with the indices and compare.
    auto idx = i.to_vector<int64_t>();
    auto val = v.to_vector<double>();
    EXPECT_EQ(int64_t(idx.size()), x.numel() / x.size(d));
    for (size_t k = 0; k < idx.size(); k += 97) {
      int64_t inner = d == 2 ? 70 : 630;  // the last kept size
      int64_t a = int64_t(k) / inner, b = int64_t(k) % inner;
      double got = d == 0 ? x.at<double>({idx[k], a, b})
                          : d == 1 ? x.at<double>({a, idx[k], b}) : x.at<double>({a, b, idx[k]});
      EXPECT_EQ(got, val[k]);
    }
  }
}

TEST(Reduce, HalfExtremaAndBool) {
  Tensor h = from_vector<float>({1.5f, -2.25f, 7.0f, 3.0f}, Shape{2, 2}, DType::f16);
  EXPECT_EQ(native::amax(h, {}, false).item<double>(), 7.0);
  EXPECT_EQ(native::amin(h, {0}, false).to_vector<double>(), (std::vector<double>{1.5, -2.25}));
  EXPECT_EQ(native::amax(h, {}, false).dtype(), DType::f16);
  Tensor b = from_vector<bool>({false, true, false, false}, Shape{2, 2});
  EXPECT_EQ(native::amax(b, {1}, false).to_vector<double>(), (std::vector<double>{1, 0}));
  EXPECT_EQ(native::argmax(b, 1, false).to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));
}

TEST(Reduce, EmptyAndScalarInputs) {
  Tensor e = zeros({0, 3});
  EXPECT_EQ(native::sum(e, {0}, false).to_vector<double>(), (std::vector<double>{0, 0, 0}));
  EXPECT_EQ(native::sum(e, {1}, false).sizes(), (Shape{0}));
  EXPECT_TRUE(std::isnan(native::mean(e, {}, false).item<double>()));
  Tensor s = scalar_tensor(4.0);
  EXPECT_EQ(native::sum(s, {}, false).item<double>(), 4.0);
  EXPECT_EQ(native::sum(s, {0}, true).dim(), 0);
  EXPECT_EQ(native::argmax(s, 0, false).item<int64_t>(), 0);
  EXPECT_THAT([&] { native::amax(e, {0}, false); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("dim of size 0")));
}

TEST(Reduce, SumTo) {
  manual_seed(5);
  Tensor g = randn({2, 3, 4}, DType::f64);
  Tensor r = native::sum_to(g, {3, 1});
  EXPECT_EQ(r.sizes(), (Shape{3, 1}));
  expect_near_all(r.to_double_vector(), reference(g, {0, 2}, Ref::sum), 1e-12);
  EXPECT_EQ(native::sum_to(g, {4}).sizes(), (Shape{4}));
  expect_near_all(native::sum_to(g, {4}).to_double_vector(), reference(g, {0, 1}, Ref::sum), 1e-12);
  EXPECT_EQ(native::sum_to(g, {}).sizes(), Shape{});
  EXPECT_NEAR(native::sum_to(g, {}).item<double>(), reference(g, {}, Ref::sum)[0], 1e-12);
  EXPECT_TRUE(native::sum_to(g, {2, 3, 4}).is_same(g));
  Tensor h = ones({5, 2}, DType::f16);
  EXPECT_EQ(native::sum_to(h, {1, 2}).dtype(), DType::f16);
  EXPECT_EQ(native::sum_to(h, {1, 2}).to_vector<double>(), (std::vector<double>{5, 5}));
  EXPECT_THAT([&] { native::sum_to(g, {5, 4}); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("does not broadcast")));
}

TEST(Reduce, MetaShapesDtypesAndNoAllocation) {
  Tensor x = native::empty({1000, 2000, 30}, DType::bf16, Device::meta());
  int64_t before = memory_stats().current_bytes;
  Tensor s = native::sum(x, {1}, true);
  EXPECT_TRUE(s.is_meta());
  EXPECT_EQ(s.sizes(), (Shape{1000, 1, 30}));
  EXPECT_EQ(s.dtype(), DType::bf16);
  EXPECT_EQ(native::sum(native::empty({4}, DType::i32, Device::meta()), {}, false).dtype(),
            DType::i64);
  EXPECT_EQ(native::mean(x, {}, false).sizes(), Shape{});
  EXPECT_EQ(native::var(x, {0, 2}, 1, false).sizes(), (Shape{2000}));
  EXPECT_EQ(native::amax(x, {-1}, false).sizes(), (Shape{1000, 2000}));
  auto [v, i] = native::max_dim(x, 0, false);
  EXPECT_EQ(v.dtype(), DType::bf16);
  EXPECT_EQ(i.dtype(), DType::i64);
  EXPECT_TRUE(i.is_meta());
  EXPECT_EQ(native::argmax(x, 2, true).sizes(), (Shape{1000, 2000, 1}));
  EXPECT_EQ(native::sum_to(x, {2000, 1}).sizes(), (Shape{2000, 1}));
  EXPECT_EQ(memory_stats().current_bytes, before);
}

TEST(Reduce, ErrorMessages) {
  Tensor x = zeros({2, 3});
  EXPECT_THAT([&] { native::sum(x, {2}, false); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("sum: dim 2 is out of range")));
  EXPECT_THAT([&] { native::sum(x, {1, -1}, false); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("appears more than once")));
  EXPECT_THAT([&] { native::mean(zeros({2}, DType::i64), {}, false); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("mean: expected a floating dtype")));
  EXPECT_THAT([&] { native::var(zeros({2}, DType::i32), {}, 1, false); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("var: expected a floating dtype")));
}

}  // namespace
}  // namespace loom
