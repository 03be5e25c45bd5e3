// Factories (tensor/factories.h) and the thread-local defaults (tensor/defaults.h): values,
// dtypes and devices of every factory, arange/linspace edge cases and errors, and the RAII
// guards (restored after an exception, per thread, honoured by every factory).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <thread>

#include "tensor/defaults.h"
#include "tensor/factories.h"
#include "tensor/random.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

TEST(Factories, ConstantFills) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.sizes(), (Shape{2, 3}));
  EXPECT_EQ(z.dtype(), DType::f32);
  EXPECT_TRUE(z.is_cpu());
  EXPECT_TRUE(z.is_contiguous());
  EXPECT_EQ(z.to_double_vector(), std::vector<double>(6, 0.0));
  EXPECT_EQ(ones({4}, DType::i32).to_double_vector(), std::vector<double>(4, 1.0));
  EXPECT_EQ(ones({4}, DType::i32).dtype(), DType::i32);
  EXPECT_EQ(full({2, 2}, -1.5, DType::f64).to_double_vector(), std::vector<double>(4, -1.5));
  EXPECT_EQ(full({3}, 0.1, DType::bf16).at<double>({2}), double(bf16_to_f32(f32_to_bf16(0.1f))));
  EXPECT_EQ(full({}, 4.0).dim(), 0);
  EXPECT_EQ(scalar_tensor(4.0).item<float>(), 4.0f);
  EXPECT_EQ(scalar_tensor(4.0, DType::i64).dtype(), DType::i64);
  EXPECT_EQ(empty({5, 0}).numel(), 0);
  EXPECT_EQ(empty({2}, DType::u8).dtype(), DType::u8);
  EXPECT_THROW(zeros({2, -1}), ValueError);

  Tensor like = ones({2, 5}, DType::f16);
  EXPECT_EQ(zeros_like(like).dtype(), DType::f16);
  EXPECT_EQ(zeros_like(like).sizes(), like.sizes());
  EXPECT_EQ(ones_like(like, DType::i64).dtype(), DType::i64);
  EXPECT_EQ(full_like(like, 3.0).sum().item<double>(), 30.0);
  EXPECT_EQ(empty_like(like).sizes(), like.sizes());
  EXPECT_TRUE(zeros_like(empty({3}, DType::f32, Device::meta())).is_meta());
}

TEST(Factories, Arange) {
  Tensor a = arange(5);
  EXPECT_EQ(a.dtype(), DType::i64);  // integral arguments: i64, as PyTorch
  EXPECT_EQ(a.to_double_vector(), (std::vector<double>{0, 1, 2, 3, 4}));
  EXPECT_EQ(arange(2, 11, 3).to_double_vector(), (std::vector<double>{2, 5, 8}));
  EXPECT_EQ(arange(5, 0, -2).to_double_vector(), (std::vector<double>{5, 3, 1}));  // negative step
  EXPECT_EQ(arange(-3, 0).to_double_vector(), (std::vector<double>{-3, -2, -1}));
  Tensor f = arange(0, 1, 0.25);
  EXPECT_EQ(f.dtype(), DType::f32);  // a non-integral argument: the default dtype
  EXPECT_EQ(f.to_double_vector(), (std::vector<double>{0, 0.25, 0.5, 0.75}));
  EXPECT_EQ(arange(0.5, 3).to_double_vector(), (std::vector<double>{0.5, 1.5, 2.5}));
  EXPECT_EQ(arange(0, 1, 0.3).numel(), 4);  // ceil((end - start) / step)
  EXPECT_EQ(arange(4, DType::f64).dtype(), DType::f64);
  EXPECT_EQ(arange(3, 3).numel(), 0);  // empty but valid
  try {
    arange(0, 10, -1);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("[0, 10) with step -1"));
    EXPECT_THAT(e.what(), HasSubstr("wrong direction"));
  }
  EXPECT_THROW(arange(5, 0), ValueError);
  try {
    arange(0, 10, 0);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("step must be nonzero"));
  }
}

TEST(Factories, LinspaceEndpointsAreExact) {
  for (int64_t steps : {2, 3, 7, 10, 101, 1000}) {
    for (auto [s, e] : std::vector<std::pair<double, double>>{
             {0.0, 1.0}, {-3.7, 11.3}, {0.1, 0.7}, {5.0, -5.0}}) {
      std::vector<double> v = linspace(s, e, steps, DType::f64).to_double_vector();
      ASSERT_EQ(v.size(), size_t(steps));
      EXPECT_EQ(v.front(), s);
      EXPECT_EQ(v.back(), e);
      double h = (e - s) / double(steps - 1);
      for (int64_t i = 0; i < steps; ++i) ASSERT_NEAR(v[size_t(i)], s + h * double(i), 1e-12);
    }
  }
  EXPECT_EQ(linspace(0, 1, 5).dtype(), DType::f32);
  EXPECT_EQ(linspace(0, 1, 5).to_double_vector(), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(linspace(2, 9, 1).to_double_vector(), std::vector<double>{2});  // one point: start
  EXPECT_EQ(linspace(2, 9, 0).numel(), 0);
  EXPECT_THROW(linspace(0, 1, -1), ValueError);
}

TEST(Factories, Eye) {
  Tensor e = eye(4);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 4; ++j) ASSERT_EQ(e.at<float>({i, j}), i == j ? 1.0f : 0.0f);
  EXPECT_EQ(eye(3, DType::i64).dtype(), DType::i64);
  EXPECT_EQ(eye(0).sizes(), (Shape{0, 0}));
  EXPECT_EQ(eye(1).to_double_vector(), std::vector<double>{1});
  EXPECT_TRUE(eye(1000, DType::f32, Device::meta()).is_meta());
}

TEST(Factories, RandomFactoriesShapesAndDTypes) {
  manual_seed(3);
  EXPECT_EQ(rand({2, 3}).dtype(), DType::f32);
  EXPECT_EQ(rand({2, 3}, DType::f64).dtype(), DType::f64);
  EXPECT_EQ(randn({4}, DType::bf16).dtype(), DType::bf16);
  Tensor ri = randint(-5, 5, {1000});
  EXPECT_EQ(ri.dtype(), DType::i64);
  std::vector<double> v = ri.to_double_vector();
  for (double x : v) ASSERT_TRUE(x >= -5 && x < 5 && x == std::floor(x));
  EXPECT_EQ(*std::min_element(v.begin(), v.end()), -5);  // both ends reached in 1000 draws
  EXPECT_EQ(*std::max_element(v.begin(), v.end()), 4);
  EXPECT_EQ(randint(0, 3, {4}, DType::i32).dtype(), DType::i32);
  EXPECT_THROW(randint(3, 3, {2}), ValueError);
  Tensor like = zeros({3, 2}, DType::f64);
  EXPECT_EQ(rand_like(like).dtype(), DType::f64);
  EXPECT_EQ(randn_like(like).sizes(), like.sizes());

  Tensor p = randperm(100);
  EXPECT_EQ(p.dtype(), DType::i64);
  std::vector<double> pv = p.to_double_vector();
  std::vector<double> sorted = pv;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 100; ++i) ASSERT_EQ(sorted[size_t(i)], i);
  EXPECT_NE(pv, sorted);  // shuffled (1 chance in 100! to fail)
  EXPECT_EQ(randperm(0).numel(), 0);
  EXPECT_EQ(randperm(1).item<int64_t>(), 0);
}

TEST(Factories, FromVectorAndTensor) {
  Tensor f = from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, Shape{2, 3});
  EXPECT_EQ(f.dtype(), DType::f32);
  EXPECT_EQ(f.sizes(), (Shape{2, 3}));
  EXPECT_EQ(f.at<float>({1, 0}), 4.0f);
  EXPECT_EQ(from_vector(std::vector<double>{1}).dtype(), DType::f64);
  EXPECT_EQ(from_vector(std::vector<int64_t>{1}).dtype(), DType::i64);
  EXPECT_EQ(from_vector(std::vector<int32_t>{1}).dtype(), DType::i32);
  EXPECT_EQ(from_vector(std::vector<uint8_t>{1}).dtype(), DType::u8);
  EXPECT_EQ(from_vector(std::vector<Half>{Half{0x3c00}}).item<float>(), 1.0f);
  EXPECT_EQ(from_vector(std::vector<BFloat16>{BFloat16{0x4000}}).item<float>(), 2.0f);
  Tensor b = from_vector(std::vector<bool>{true, false, true});
  EXPECT_EQ(b.dtype(), DType::bool_);
  EXPECT_EQ(b.to_double_vector(), (std::vector<double>{1, 0, 1}));
  EXPECT_EQ(from_vector(std::vector<double>{7}, Shape{}).dim(), 0);
  EXPECT_EQ(from_vector(std::vector<int64_t>{1, 2}, {}, DType::f16).dtype(), DType::f16);
  EXPECT_TRUE(from_vector(std::vector<float>{1, 2}, {}, {}, Device::meta()).is_meta());
  try {
    from_vector(std::vector<float>{1, 2, 3}, Shape{2, 2});
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("3 values do not fill shape [2, 2]"));
  }
  EXPECT_EQ(from_vector(std::vector<float>{}).sizes(), (Shape{0}));

  EXPECT_EQ(tensor({1.0, 2.0}).dtype(), DType::f32);
  EXPECT_EQ(tensor({1, 2}).dtype(), DType::i64);
  EXPECT_EQ(tensor({int64_t(1) << 40}).item<int64_t>(), int64_t(1) << 40);
  EXPECT_EQ(tensor({1, 2}, DType::f64).dtype(), DType::f64);
  EXPECT_EQ(tensor({0.5}, DType::bf16).dtype(), DType::bf16);
}

TEST(Defaults, GuardsScopeAndRestore) {
  ASSERT_EQ(default_dtype(), DType::f32);
  ASSERT_EQ(default_device(), Device::cpu());
  {
    DefaultDTypeGuard g(DType::f64);
    EXPECT_EQ(default_dtype(), DType::f64);
    EXPECT_EQ(zeros({2}).dtype(), DType::f64);
    EXPECT_EQ(tensor({1.0}).dtype(), DType::f64);
    EXPECT_EQ(arange(0, 1, 0.5).dtype(), DType::f64);
    EXPECT_EQ(arange(3).dtype(), DType::i64);  // integral arange ignores the float default
    EXPECT_EQ(linspace(0, 1, 3).dtype(), DType::f64);
    EXPECT_EQ(rand({2}).dtype(), DType::f64);
    EXPECT_EQ(randint(0, 2, {2}).dtype(), DType::i64);
    {
      DefaultDTypeGuard inner(DType::bf16);
      EXPECT_EQ(randn({2}).dtype(), DType::bf16);
      EXPECT_EQ(eye(2).dtype(), DType::bf16);
    }
    EXPECT_EQ(default_dtype(), DType::f64);
  }
  EXPECT_EQ(default_dtype(), DType::f32);

  {
    DefaultDeviceGuard g(Device::meta());
    Tensor z = zeros({1 << 20});
    EXPECT_TRUE(z.is_meta());
    EXPECT_TRUE(ones({2}).is_meta());
    EXPECT_TRUE(empty({2}).is_meta());
    EXPECT_TRUE(rand({2}).is_meta());
    EXPECT_TRUE(randn({2}).is_meta());
    EXPECT_TRUE(randint(0, 5, {2}).is_meta());
    EXPECT_TRUE(arange(10).is_meta());
    EXPECT_TRUE(linspace(0, 1, 4).is_meta());
    EXPECT_TRUE(eye(3).is_meta());
    EXPECT_TRUE(randperm(3).is_meta());
    EXPECT_TRUE(tensor({1.0, 2.0}).is_meta());
    EXPECT_TRUE(full({2}, 3.0).is_meta());
    EXPECT_TRUE(zeros({2}, {}, Device::cpu()).is_cpu());  // an explicit device wins
  }
  EXPECT_EQ(default_device(), Device::cpu());
}

TEST(Defaults, MetaFactoriesAllocateNothing) {
  int64_t before = memory_stats().current_bytes, peak = memory_stats().peak_bytes;
  DefaultDeviceGuard g(Device::meta());
  Tensor a = arange(int64_t(1) << 30);  // would be 8 GiB of host staging if materialised
  Tensor l = linspace(0, 1, int64_t(1) << 30);
  Tensor p = randperm(int64_t(1) << 30);
  Tensor e = eye(1 << 16);
  EXPECT_EQ(a.numel(), int64_t(1) << 30);
  EXPECT_EQ(l.numel(), int64_t(1) << 30);
  EXPECT_EQ(p.numel(), int64_t(1) << 30);
  EXPECT_EQ(memory_stats().current_bytes, before);
  EXPECT_EQ(memory_stats().peak_bytes, peak);
}

TEST(Defaults, RestoredAfterAnExceptionAndIntegerDefaultsRejected) {
  try {
    DefaultDTypeGuard g(DType::f16);
    DefaultDeviceGuard d(Device::meta());
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(default_dtype(), DType::f32);
  EXPECT_EQ(default_device(), Device::cpu());

  for (DType bad : {DType::i64, DType::i32, DType::u8, DType::bool_}) {
    try {
      set_default_dtype(bad);
      FAIL() << bad;
    } catch (const ValueError& e) {
      EXPECT_THAT(e.what(), HasSubstr("is not a floating dtype"));
    }
    EXPECT_THROW(DefaultDTypeGuard g(bad), ValueError);
    EXPECT_EQ(default_dtype(), DType::f32);
  }
  set_default_dtype(DType::f64);
  EXPECT_EQ(zeros({1}).dtype(), DType::f64);
  set_default_dtype(DType::f32);
}

TEST(Defaults, AreThreadLocal) {
  DefaultDTypeGuard g(DType::f16);
  DefaultDeviceGuard d(Device::meta());
  DType other_dtype = DType::u8;
  Device other_device = Device::cuda(3);
  std::thread([&] {
    other_dtype = zeros({1}).dtype();
    other_device = zeros({1}).device();
  }).join();
  EXPECT_EQ(other_dtype, DType::f32);
  EXPECT_EQ(other_device, Device::cpu());
  EXPECT_EQ(zeros({1}).dtype(), DType::f16);
}

}  // namespace
}  // namespace loom
