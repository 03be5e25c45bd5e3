// Views (tensor/native_core.cpp through the Tensor methods): view, reshape, transpose,
// permute, narrow/slice, select, expand, squeeze/unsqueeze, flatten, contiguous. Each checks
// shape, strides, storage sharing and values against index arithmetic done here, that writes
// through a view reach the base, and the error messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

// 0, 1, 2, ... in f32 with the given shape.
Tensor iota(const Shape& shape) { return arange(0, double(shape_numel(shape)), 1, DType::f32).view(shape); }

std::vector<double> range(int64_t n) {
  std::vector<double> v(size_t(n), 0.0);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(i);
  return v;
}

template <class Fn>
void expect_value_error(Fn fn, const std::string& a, const std::string& b = "") {
  try {
    fn();
    FAIL() << "expected ValueError containing '" << a << "'";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr(a));
    if (!b.empty()) {
      EXPECT_THAT(e.what(), HasSubstr(b));
    }
  }
}

TEST(Views, ViewSharesStorageAndInfersMinusOne) {
  Tensor t = iota({2, 3, 4});
  Tensor v = t.view({6, -1});
  EXPECT_EQ(v.sizes(), (Shape{6, 4}));
  EXPECT_EQ(v.strides(), (Shape{4, 1}));
  EXPECT_EQ(v.storage(), t.storage());
  EXPECT_EQ(v.to_double_vector(), range(24));
  EXPECT_EQ(t.view({-1}).sizes(), (Shape{24}));
  EXPECT_EQ(t.view({4, -1, 2}).sizes(), (Shape{4, 3, 2}));
  EXPECT_EQ(t.view({1, 24, 1}).sizes(), (Shape{1, 24, 1}));
  EXPECT_EQ(scalar_tensor(3.0).view({1, 1}).sizes(), (Shape{1, 1}));
  EXPECT_EQ(iota({1}).view({}).dim(), 0);
  v.fill_(0.0);
  EXPECT_EQ(t.sum().item<double>(), 0.0);
}

TEST(Views, ViewOfANonContiguousTensorWhenStridesAllow) {
  Tensor t = iota({4, 6}).narrow(1, 0, 4);  // (4, 4) with row stride 6
  // Splitting a dim is fine, merging the two is not.
  Tensor v = t.view({4, 2, 2});
  EXPECT_EQ(v.strides(), (Shape{6, 2, 1}));
  EXPECT_EQ(v.at<float>({3, 1, 1}), 3 * 6 + 3);
  Tensor tt = iota({2, 3, 4}).transpose(0, 1);  // (3, 2, 4)
  EXPECT_EQ(tt.view({3, 2, 2, 2}).strides(), (Shape{4, 12, 2, 1}));
}

TEST(Views, ViewErrorsSuggestReshape) {
  Tensor t = iota({3, 4}).t();
  expect_value_error([&] { (void)t.view({12}); }, "use reshape()", "[12]");
  expect_value_error([&] { (void)t.view({5, -1}); }, "[5, -1] is invalid for input of size 12");
  expect_value_error([&] { (void)t.view({-1, -1}); }, "only one dimension can be -1");
  expect_value_error([&] { (void)t.view({7}); }, "invalid for input of size 12");
  expect_value_error([&] { (void)t.view({-2, 6}); }, "invalid size -2");
}

TEST(Views, ReshapeIsAViewWhenPossibleAndACopyOtherwise) {
  Tensor t = iota({3, 4});
  Tensor r = t.reshape({2, 6});
  EXPECT_EQ(r.storage(), t.storage());
  Tensor tt = t.t();
  Tensor c = tt.reshape({12});
  EXPECT_NE(c.storage(), t.storage());
  EXPECT_TRUE(c.is_contiguous());
  std::vector<double> want;
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 3; ++i) want.push_back(i * 4 + j);
  EXPECT_EQ(c.to_double_vector(), want);
  EXPECT_EQ(tt.reshape({4, 3}).storage(), t.storage());  // same shape: a view
  EXPECT_EQ(tt.reshape({4, 3, 1}).storage(), t.storage());
  expect_value_error([&] { (void)t.reshape({5}); }, "reshape", "invalid for input of size 12");
}

TEST(Views, TransposeAndPermute) {
  Tensor t = iota({2, 3, 4});
  Tensor x = t.transpose(0, 2);
  EXPECT_EQ(x.sizes(), (Shape{4, 3, 2}));
  EXPECT_EQ(x.strides(), (Shape{1, 4, 12}));
  EXPECT_FALSE(x.is_contiguous());
  EXPECT_EQ(x.at<float>({3, 1, 1}), 1 * 12 + 1 * 4 + 3);
  EXPECT_EQ(t.transpose(-1, 0).sizes(), x.sizes());
  EXPECT_EQ(iota({3, 5}).t().sizes(), (Shape{5, 3}));
  EXPECT_EQ(iota({5}).t().sizes(), (Shape{5}));
  EXPECT_THROW((void)t.t(), ValueError);

  Tensor p = t.permute({1, 2, 0});
  EXPECT_EQ(p.sizes(), (Shape{3, 4, 2}));
  EXPECT_EQ(p.strides(), (Shape{4, 1, 12}));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t k = 0; k < 2; ++k) ASSERT_EQ(p.at<float>({i, j, k}), t.at<float>({k, i, j}));
  EXPECT_EQ(t.permute({-1, 0, 1}).sizes(), (Shape{4, 2, 3}));
  expect_value_error([&] { (void)t.permute({0, 0, 1}); }, "permute: dim 0 repeats", "[0, 0, 1]");
  expect_value_error([&] { (void)t.permute({0, 1}); }, "permute: got 2 dims for a tensor with 3");
  expect_value_error([&] { (void)t.permute({0, 1, 3}); }, "permute: dim 3 is out of range");
  expect_value_error([&] { (void)t.transpose(0, 3); }, "transpose: dim 3 is out of range");
}

TEST(Views, NarrowAndSlice) {
  Tensor t = iota({10});
  EXPECT_EQ(t.narrow(0, 2, 3).to_double_vector(), (std::vector<double>{2, 3, 4}));
  EXPECT_EQ(t.narrow(0, -3, 2).to_double_vector(), (std::vector<double>{7, 8}));
  EXPECT_EQ(t.narrow(0, 10, 0).numel(), 0);
  expect_value_error([&] { (void)t.narrow(0, 8, 3); }, "narrow: start 8 and length 3");
  expect_value_error([&] { (void)t.narrow(0, -11, 1); }, "narrow");

  auto s = [&](std::optional<int64_t> b, std::optional<int64_t> e, int64_t step) {
    return t.slice(0, b, e, step).to_double_vector();
  };
  EXPECT_EQ(s(1, 8, 3), (std::vector<double>{1, 4, 7}));
  EXPECT_EQ(s(-4, std::nullopt, 1), (std::vector<double>{6, 7, 8, 9}));
  EXPECT_EQ(s(std::nullopt, -7, 2), (std::vector<double>{0, 2}));
  EXPECT_EQ(s(-100, 100, 4), (std::vector<double>{0, 4, 8}));  // clamped like Python
  EXPECT_EQ(s(7, 3, 1), std::vector<double>{});
  EXPECT_EQ(s(std::nullopt, std::nullopt, 20), std::vector<double>{0});
  EXPECT_EQ(t.slice(0, 1, 8, 3).strides(), (Shape{3}));
  EXPECT_EQ(t.slice(0, 1, 8, 3).storage_offset(), 1);
  expect_value_error([&] { (void)t.slice(0, 0, 5, 0); }, "slice: step must be positive, got 0");
  expect_value_error([&] { (void)t.slice(0, 0, 5, -1); }, "step must be positive");

  Tensor m = iota({4, 5});
  Tensor sub = m.slice(1, 1, std::nullopt, 2).slice(0, -2, std::nullopt, 1);  // rows 2,3 cols 1,3
  EXPECT_EQ(sub.sizes(), (Shape{2, 2}));
  EXPECT_EQ(sub.to_double_vector(), (std::vector<double>{11, 13, 16, 18}));
  sub.fill_(-1.0);  // writes reach the base
  EXPECT_EQ(m.at<float>({3, 3}), -1.0f);
  EXPECT_EQ(m.at<float>({3, 2}), 17.0f);
  EXPECT_EQ(m.sum().item<double>(), 190.0 - (11 + 13 + 16 + 18) - 4);
}

TEST(Views, SelectAndIndexing) {
  Tensor t = iota({3, 4});
  EXPECT_EQ(t[1].to_double_vector(), (std::vector<double>{4, 5, 6, 7}));
  EXPECT_EQ(t[-1].to_double_vector(), (std::vector<double>{8, 9, 10, 11}));
  EXPECT_EQ(t.select(1, 2).to_double_vector(), (std::vector<double>{2, 6, 10}));
  EXPECT_EQ(t.select(-1, -1).to_double_vector(), (std::vector<double>{3, 7, 11}));
  EXPECT_EQ(t[2][3].dim(), 0);
  EXPECT_EQ(t[2][3].item<float>(), 11.0f);
  t[0][1].fill_(100.0);
  EXPECT_EQ(t.at<float>({0, 1}), 100.0f);
  expect_value_error([&] { (void)t[3]; }, "select: index 3 is out of range for dim 0 of size 3");
  expect_value_error([&] { (void)t.select(1, -5); }, "index -5 is out of range");
  expect_value_error([&] { (void)t.select(2, 0); }, "select: dim 2 is out of range");
}

TEST(Views, Expand) {
  Tensor c = iota({3, 1});
  Tensor e = c.expand({2, 3, 4});
  EXPECT_EQ(e.sizes(), (Shape{2, 3, 4}));
  EXPECT_EQ(e.strides(), (Shape{0, 1, 0}));
  EXPECT_EQ(e.storage(), c.storage());
  EXPECT_EQ(e.at<float>({1, 2, 3}), 2.0f);
  EXPECT_EQ(c.expand({-1, 5}).sizes(), (Shape{3, 5}));
  EXPECT_EQ(c.expand_as(zeros({3, 7})).sizes(), (Shape{3, 7}));
  EXPECT_EQ(scalar_tensor(2.0).expand({2, 2}).to_double_vector(), (std::vector<double>{2, 2, 2, 2}));
  EXPECT_EQ(c.expand({3, 0}).numel(), 0);
  expect_value_error([&] { (void)c.expand({4, 4}); }, "expand: the size 3 at dim 0 must match the target 4");
  expect_value_error([&] { (void)c.expand({3}); }, "fewer dims");
  expect_value_error([&] { (void)c.expand({-1, 3, 4}); }, "-1 is not allowed for a new leading dim");
  expect_value_error([&] { (void)c.expand({3, -2}); }, "expand");
}

TEST(Views, SqueezeUnsqueezeFlatten) {
  Tensor t = iota({1, 3, 1, 2});
  EXPECT_EQ(t.squeeze().sizes(), (Shape{3, 2}));
  EXPECT_EQ(t.squeeze(2).sizes(), (Shape{1, 3, 2}));
  EXPECT_EQ(t.squeeze(-4).sizes(), (Shape{3, 1, 2}));
  EXPECT_EQ(t.squeeze(1).sizes(), t.sizes());  // not size 1: unchanged, as PyTorch
  EXPECT_EQ(t.squeeze().storage(), t.storage());
  Tensor u = iota({3, 2});
  EXPECT_EQ(u.unsqueeze(0).sizes(), (Shape{1, 3, 2}));
  EXPECT_EQ(u.unsqueeze(1).sizes(), (Shape{3, 1, 2}));
  EXPECT_EQ(u.unsqueeze(-1).sizes(), (Shape{3, 2, 1}));
  EXPECT_EQ(u.unsqueeze(2).strides(), (Shape{2, 1, 1}));
  EXPECT_TRUE(u.unsqueeze(1).is_contiguous());
  EXPECT_TRUE(u.t().unsqueeze(0).unsqueeze(2).squeeze().sizes() == (Shape{2, 3}));
  expect_value_error([&] { (void)u.unsqueeze(3); }, "unsqueeze: dim 3 is out of range");
  expect_value_error([&] { (void)u.squeeze(2); }, "squeeze: dim 2 is out of range");

  Tensor f = iota({2, 3, 4, 5});
  EXPECT_EQ(f.flatten().sizes(), (Shape{120}));
  EXPECT_EQ(f.flatten(1).sizes(), (Shape{2, 60}));
  EXPECT_EQ(f.flatten(1, 2).sizes(), (Shape{2, 12, 5}));
  EXPECT_EQ(f.flatten(-2, -1).sizes(), (Shape{2, 3, 20}));
  EXPECT_EQ(f.flatten(2, 2).sizes(), f.sizes());
  EXPECT_EQ(f.flatten().storage(), f.storage());
  EXPECT_EQ(scalar_tensor(1.0).flatten().sizes(), (Shape{1}));
  Tensor ft = f.transpose(1, 3).flatten();
  EXPECT_NE(ft.storage(), f.storage());
  EXPECT_EQ(ft.at<float>({1}), f.at<float>({0, 1, 0, 0}));
  expect_value_error([&] { (void)f.flatten(2, 1); }, "start_dim must not come after end_dim");
}

TEST(Views, ContiguousAndIsContiguous) {
  Tensor t = iota({3, 4});
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_TRUE(t.contiguous().is_same(t));  // the same handle, no copy
  EXPECT_TRUE(t[1].is_contiguous());
  EXPECT_TRUE(t.narrow(0, 1, 2).is_contiguous());
  EXPECT_FALSE(t.narrow(1, 1, 2).is_contiguous());
  EXPECT_FALSE(t.t().is_contiguous());
  EXPECT_TRUE(t.select(1, 0).unsqueeze(1).narrow(0, 0, 1).is_contiguous());  // one element
  EXPECT_FALSE(t.select(1, 0).is_contiguous());
  EXPECT_FALSE(t.expand({2, 3, 4}).is_contiguous());
  EXPECT_TRUE(t.unsqueeze(0).expand({1, 3, 4}).is_contiguous());
  EXPECT_TRUE(iota({3, 1}).t().is_contiguous());  // size-1 dims have any stride
  EXPECT_FALSE(t.slice(1, 0, 4, 2).is_contiguous());
  EXPECT_TRUE(zeros({0, 3}).t().is_contiguous());  // empty tensors are contiguous (PyTorch)

  Tensor c = t.t().contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), t.storage());
  EXPECT_EQ(c.strides(), (Shape{3, 1}));
  EXPECT_EQ(c.to_double_vector(), t.t().to_double_vector());
  c.fill_(0.0);  // a copy: the base is untouched
  EXPECT_EQ(t.at<float>({2, 3}), 11.0f);
}

TEST(Views, WritesThroughChainedViewsReachTheBase) {
  Tensor base = zeros({4, 5, 6});
  Tensor v = base.permute({2, 0, 1}).slice(0, 1, std::nullopt, 2)[1].narrow(1, 2, 2);
  // v[i, j] is base[i, 2 + j, 3]
  EXPECT_EQ(v.sizes(), (Shape{4, 2}));
  v.copy_(iota({4, 2}));
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 5; ++j)
      for (int64_t k = 0; k < 6; ++k) {
        double want = (k == 3 && j >= 2 && j < 4) ? double(i * 2 + (j - 2)) : 0.0;
        ASSERT_EQ(base.at<double>({i, j, k}), want) << i << j << k;
      }
}

TEST(Views, AsStridedAndSplitChunkShareStorage) {
  Tensor t = iota({10});
  Tensor w = native::as_strided(t, {3, 3}, {2, 1}, 1);  // overlapping windows
  EXPECT_EQ(w.to_double_vector(), (std::vector<double>{1, 2, 3, 3, 4, 5, 5, 6, 7}));
  TensorList parts = t.split(4);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].to_double_vector(), (std::vector<double>{8, 9}));
  for (const Tensor& p : parts) EXPECT_EQ(p.storage(), t.storage());
  EXPECT_EQ(t.chunk(3)[0].numel(), 4);
}

}  // namespace
}  // namespace loom
