// Seeded random fills (tensor/random.h): reproducibility for a seed, independence from the
// thread count and from the memory layout, per-thread generators, the statistics of rand,
// randn, randint and dropout masks, and half-open ranges in every floating dtype.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "kernels/cpu/parallel.h"
#include "kernels/threads_guard.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

struct Moments {
  double mean = 0, std = 0, min = 0, max = 0;
};
Moments moments(const Tensor& t) {
  std::vector<double> v = t.to_double_vector();
  Moments m;
  double s = 0, ss = 0;
  for (double x : v) s += x;
  m.mean = s / double(v.size());
  for (double x : v) ss += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(ss / double(v.size() - 1));
  m.min = *std::min_element(v.begin(), v.end());
  m.max = *std::max_element(v.begin(), v.end());
  return m;
}


TEST(Random, SameSeedSameNumbersDifferentSeedsDiffer) {
  manual_seed(1234);
  Tensor a = rand({1000});
  Tensor b = randn({1000});
  Tensor c = randint(0, 1000000, {1000});
  Tensor a2 = rand({1000});  // the stream moves on
  EXPECT_FALSE(a.equal(a2));
  manual_seed(1234);
  EXPECT_TRUE(rand({1000}).equal(a));
  EXPECT_TRUE(randn({1000}).equal(b));
  EXPECT_TRUE(randint(0, 1000000, {1000}).equal(c));
  EXPECT_TRUE(rand({1000}).equal(a2));
  manual_seed(1235);
  EXPECT_FALSE(rand({1000}).equal(a));
  manual_seed(1234);
  Tensor p1 = randperm(50);
  manual_seed(1234);
  EXPECT_TRUE(randperm(50).equal(p1));
  EXPECT_EQ(default_generator().seed(), 1234u);
}

TEST(Random, ValuesDoNotDependOnTheThreadCount) {
  ThreadsGuard restore;
  const Shape shape = {3, 100000};  // several parallel chunks of the fill
  auto draw = [&] {
    manual_seed(99);
    return std::vector<Tensor>{rand(shape), randn(shape), randint(-7, 7, shape),
                               rand(shape, DType::bf16), native::dropout_mask(zeros(shape), 0.3)};
  };
  set_num_threads(1);
  std::vector<Tensor> one = draw();
  set_num_threads(2);
  ASSERT_EQ(get_num_threads(), 2);
  std::vector<Tensor> two = draw();
  set_num_threads(3);
  std::vector<Tensor> three = draw();
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(one[i].equal(two[i])) << i;
    EXPECT_TRUE(one[i].equal(three[i])) << i;
  }
}

TEST(Random, EachThreadHasItsOwnReproducibleStream) {
  manual_seed(5);
  Tensor mine = rand({100});
  Tensor theirs;
  std::thread([&] {
    manual_seed(5);
    theirs = rand({100});
  }).join();
  EXPECT_TRUE(mine.equal(theirs));
}

TEST(Random, ExplicitGenerators) {
  Generator g1(42), g2(42);
  Tensor a = empty({500}), b = empty({500});
  fill_uniform(a, -2, 3, g1);
  fill_uniform(b, -2, 3, g2);
  EXPECT_TRUE(a.equal(b));
  EXPECT_EQ(g1.offset(), 500u);
  fill_normal(a, 0, 1, g1);
  EXPECT_FALSE(a.equal(b));
  g2.set_offset(500);
  fill_normal(b, 0, 1, g2);
  EXPECT_TRUE(a.equal(b));
}

TEST(Random, UniformStatistics) {
  manual_seed(7);
  Moments m = moments(rand({1000000}, DType::f64));
  EXPECT_NEAR(m.mean, 0.5, 2e-3);               // sigma of the mean: 0.29e-3
  EXPECT_NEAR(m.std, 1.0 / std::sqrt(12.0), 2e-3);
  EXPECT_GE(m.min, 0.0);
  EXPECT_LT(m.max, 1.0);
  EXPECT_LT(m.min, 1e-4);
  EXPECT_GT(m.max, 1 - 1e-4);
  Tensor u = empty({100000}, DType::f64);
  u.uniform_(-3, 5);
  Moments mu = moments(u);
  EXPECT_NEAR(mu.mean, 1.0, 0.05);
  EXPECT_GE(mu.min, -3.0);
  EXPECT_LT(mu.max, 5.0);
}

TEST(Random, UniformStaysBelowHighInEveryFloatDType) {
  // A draw just below 1 rounds to 1.0 in bf16 (1 - 2^-9 and up) about once in 500 draws.
  manual_seed(11);
  for (DType d : {DType::bf16, DType::f16, DType::f32}) {
    Moments m = moments(rand({1 << 20}, d));
    EXPECT_LT(m.max, 1.0) << d;
    EXPECT_GE(m.min, 0.0) << d;
    EXPECT_NEAR(m.mean, 0.5, 3e-3) << d;
  }
  // f32 has spacing 8 at 1e8: every draw in [1e8, 1e8 + 8) must store 1e8, never 1e8 + 8.
  Tensor t = empty({10000}, DType::f32);
  t.uniform_(1e8, 1e8 + 8);
  EXPECT_EQ(moments(t).max, 1e8);
  // Negative ranges, where stepping below means away from zero.
  Tensor n = empty({100000}, DType::bf16);
  n.uniform_(-2, -1);
  EXPECT_LT(moments(n).max, -1.0);
  Tensor z = empty({100000}, DType::bf16);
  z.uniform_(-1, 0);
  EXPECT_LT(moments(z).max, 0.0);
  Tensor e = empty({10}, DType::f32);
  e.uniform_(2, 2);  // an empty interval gives its end point
  EXPECT_EQ(moments(e).min, 2.0);
  EXPECT_EQ(moments(e).max, 2.0);
}

TEST(Random, NormalStatistics) {
  manual_seed(8);
  Tensor x = randn({1000000}, DType::f64);
  Moments m = moments(x);
  EXPECT_NEAR(m.mean, 0.0, 5e-3);  // sigma of the mean: 1e-3
  EXPECT_NEAR(m.std, 1.0, 5e-3);   // sigma of the std: 0.7e-3
  std::vector<double> v = x.to_double_vector();
  double within1 = 0, within2 = 0, skew = 0, kurt = 0;
  for (double e : v) {
    within1 += std::abs(e) < 1;
    within2 += std::abs(e) < 2;
    skew += e * e * e;
    kurt += e * e * e * e;
  }
  double n = double(v.size());
  EXPECT_NEAR(within1 / n, 0.682689, 3e-3);
  EXPECT_NEAR(within2 / n, 0.954500, 2e-3);
  EXPECT_NEAR(skew / n, 0.0, 0.02);
  EXPECT_NEAR(kurt / n, 3.0, 0.05);
  Tensor y = empty({200001}, DType::f64);  // odd count: the last pair is half used
  y.normal_(3.0, 2.0);
  Moments my = moments(y);
  EXPECT_NEAR(my.mean, 3.0, 0.02);
  EXPECT_NEAR(my.std, 2.0, 0.02);
}

TEST(Random, RandintIsUniformOverItsRange) {
  manual_seed(9);
  std::vector<double> v = randint(-3, 7, {200000}).to_double_vector();
  std::vector<int> counts(10, 0);
  for (double x : v) {
    ASSERT_GE(x, -3);
    ASSERT_LT(x, 7);
    ASSERT_EQ(x, std::floor(x));
    ++counts[size_t(int(x) + 3)];
  }
  for (int c : counts) EXPECT_NEAR(c, 20000, 800);  // sigma ~134
  std::vector<double> big = randint(0, int64_t(1) << 40, {1000}).to_double_vector();
  EXPECT_GT(*std::max_element(big.begin(), big.end()), double(int64_t(1) << 39));
  EXPECT_THROW(randint(5, 4, {1}), ValueError);
}

TEST(Random, NonContiguousFillsEveryElementAsAContiguousFillWould) {
  Tensor base = full({300, 400}, -1.0);
  Tensor t = base.t();  // (400, 300), non-contiguous
  manual_seed(21);
  t.uniform_(0, 1);
  std::vector<double> v = base.to_double_vector();
  for (double x : v) ASSERT_TRUE(x >= 0 && x < 1);
  // Values follow the view's logical order: the same as a contiguous (400, 300) fill.
  manual_seed(21);
  Tensor c = empty({400, 300});
  c.uniform_(0, 1);
  EXPECT_TRUE(t.equal(c));
  Tensor strided = full({1000}, -5.0).slice(0, 1, std::nullopt, 3);
  strided.normal_();
  for (double x : strided.to_double_vector()) ASSERT_NE(x, -5.0);
}

TEST(Random, DropoutMask) {
  manual_seed(13);
  Tensor m = native::dropout_mask(zeros({100000}), 0.25);
  std::vector<double> v = m.to_double_vector();
  double zeros_seen = 0;
  for (double x : v) {
    ASSERT_TRUE(x == 0.0 || std::abs(x - 1.0 / 0.75) < 1e-6) << x;
    zeros_seen += x == 0.0;
  }
  EXPECT_NEAR(zeros_seen / double(v.size()), 0.25, 0.01);
  EXPECT_EQ(native::dropout_mask(zeros({10}), 1.0).sum().item<double>(), 0.0);
  EXPECT_EQ(native::dropout_mask(zeros({10}), 0.0).sum().item<double>(), 10.0);
  EXPECT_THROW(native::dropout_mask(zeros({10}), 1.5), ValueError);
}

}  // namespace
}  // namespace loom
