// copy_ and conversions (tensor/native_core.cpp, kernels/cpu/copy.cpp): broadcasting, every
// dtype pair on values chosen to show each conversion rule, non-contiguous source and
// destination, meta and device errors; to(), clone(), item(), at(), to_vector(), allclose()
// and equal().
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/cuda_status.h"
#include "kernels/threads_guard.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

Tensor iota(const Shape& shape, DType d = DType::f32) {
  return arange(0, double(shape_numel(shape)), 1, d).view(shape);
}

// What a value becomes when stored in dtype d, computed here from the rules: floats round
// (16-bit ones through f32 to nearest even), integers truncate towards zero and wrap modulo
// 2^bits, bool is "nonzero".
double stored(double v, DType d) {
  switch (d) {
    case DType::f64: return v;
    case DType::f32: return double(float(v));
    case DType::f16: return f16_to_f32(f32_to_f16(float(v)));
    case DType::bf16: return bf16_to_f32(f32_to_bf16(float(v)));
    case DType::i64: return double(int64_t(v));
    case DType::i32: return double(int32_t(int64_t(v)));
    case DType::u8: return double(uint8_t(int64_t(v)));
    case DType::bool_: return v != 0.0 ? 1.0 : 0.0;
  }
  return 0;
}

TEST(Copy, EveryDTypePairConverts) {
  // Values exact in every floating dtype: fractions (truncated by integers), 200 (past i8
  // but not u8), negatives (only where u8 is not involved: a negative float converted to an
  // unsigned type is undefined in C++ and in PyTorch), 0 (false).
  for (DType from : kAllDTypes)
    for (DType to : kAllDTypes) {
      bool unsigned_pair = from == DType::u8 || to == DType::u8;
      std::vector<double> values = {0.0, 1.0, 2.75, 100.0, 200.0};
      if (!unsigned_pair) values.insert(values.end(), {-2.0, -3.5, -0.5});
      std::vector<double> src_vals;
      for (double v : values) src_vals.push_back(stored(v, from));
      Tensor src = from_vector(values, {}, DType::f64).to(from);
      ASSERT_EQ(src.to_double_vector(), src_vals) << from;
      Tensor dst = empty({int64_t(values.size())}, to);
      dst.copy_(src);
      std::vector<double> want;
      for (double v : src_vals) want.push_back(stored(v, to));
      EXPECT_EQ(dst.to_double_vector(), want) << from << " -> " << to;
      EXPECT_EQ(src.to(to).to_double_vector(), want) << from << " -> " << to;
    }
}

TEST(Copy, SixteenBitConversionsRoundToNearestEven) {
  Tensor src = tensor({1.0 + std::ldexp(1.0, -11), 1.0 + 3 * std::ldexp(1.0, -11), 65520.0, 1e-8,
                       -0.0},
                      DType::f32);
  std::vector<double> h = src.to(DType::f16).to_double_vector();
  EXPECT_EQ(h[0], 1.0);
  EXPECT_EQ(h[1], 1.0 + 4 * std::ldexp(1.0, -11));
  EXPECT_TRUE(std::isinf(h[2]));
  EXPECT_EQ(h[3], 0.0);
  EXPECT_TRUE(std::signbit(h[4]));
  Tensor nan = full({3}, std::nan("")).to(DType::bf16);
  EXPECT_TRUE(std::isnan(nan.at<double>({1})));
}

TEST(Copy, Broadcasts) {
  Tensor dst = zeros({3, 4});
  dst.copy_(tensor({1.0, 2.0, 3.0, 4.0}));
  EXPECT_EQ(dst[2].to_double_vector(), (std::vector<double>{1, 2, 3, 4}));
  dst.copy_(tensor({10.0, 20.0, 30.0}).view({3, 1}));
  EXPECT_EQ(dst.select(1, 3).to_double_vector(), (std::vector<double>{10, 20, 30}));
  dst.copy_(scalar_tensor(7.0, DType::i64));
  EXPECT_EQ(dst.sum().item<double>(), 84.0);
  EXPECT_THROW(dst.copy_(zeros({2, 4})), ValueError);
  EXPECT_THROW(dst.copy_(zeros({1, 3, 4})), ValueError);
}

TEST(Copy, NonContiguousSourceAndDestination) {
  Tensor src = iota({4, 6}).t();  // (6, 4)
  Tensor dst_base = full({8, 6}, -1.0, DType::f64);
  Tensor dst = dst_base.slice(0, 1, std::nullopt, 2).t().slice(0, 0, std::nullopt, 1);  // (6, 4)
  ASSERT_EQ(dst.sizes(), (Shape{6, 4}));
  dst.copy_(src);
  for (int64_t i = 0; i < 8; ++i)
    for (int64_t j = 0; j < 6; ++j) {
      double want = (i % 2 == 1) ? double(((i - 1) / 2) * 6 + j) : -1.0;
      ASSERT_EQ(dst_base.at<double>({i, j}), want) << i << "," << j;
    }
  // Into a transposed destination across a dtype change, sizes that exercise the runs.
  Tensor a = randn({37, 53});
  Tensor b = empty({53, 37}, DType::bf16).t();
  b.copy_(a);
  EXPECT_TRUE(b.allclose(a.to(DType::bf16).to(DType::f32), 0, 0));
  // A many-dim permutation.
  Tensor p = iota({2, 3, 2, 3, 2, 2}).permute({5, 3, 1, 4, 2, 0});
  Tensor c = p.contiguous();
  EXPECT_EQ(c.to_double_vector(), p.to_double_vector());
  EXPECT_EQ(c.at<float>({1, 2, 1, 0, 1, 1}), p.at<float>({1, 2, 1, 0, 1, 1}));
}

// contiguous() of iota(shape).permute(perm), checked element by element against the
// iota value each output index must hold: its row-major offset in `shape`.
void expect_permuted_copy(const Shape& shape, const Shape& perm, DType d) {
  Tensor src = iota(shape, d).permute(perm);
  Tensor out = src.contiguous();
  ASSERT_TRUE(out.is_contiguous());
  Shape base_strides(shape.size(), 1);
  for (int64_t i = int64_t(shape.size()) - 2; i >= 0; --i)
    base_strides[i] = base_strides[i + 1] * shape[i + 1];
  const Tensor flat = out.to(DType::f64).view({-1});
  const double* got = flat.data_ptr<double>();
  Shape idx(shape.size(), 0);
  for (int64_t n = 0; n < out.numel(); ++n) {
    int64_t want = 0;
    for (size_t k = 0; k < idx.size(); ++k) want += idx[k] * base_strides[perm[k]];
    ASSERT_EQ(got[n], stored(double(want), d)) << "element " << n << " of " << shape_str(shape);
    for (int64_t k = int64_t(idx.size()) - 1; k >= 0; --k) {
      if (++idx[k] < out.sizes()[k]) break;
      idx[k] = 0;
    }
  }
}

TEST(Copy, TransposesInTilesForEveryElementSize) {
  // 4-byte elements take the 8 x 8 register transpose on whole 16 x 16 tiles and the scalar
  // loop on the ragged edges (37, 53); the others always take the scalar tile loop.
  for (DType d : {DType::f32, DType::i32, DType::f64, DType::i64, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(d));
    expect_permuted_copy({37, 53}, {1, 0}, d);
    expect_permuted_copy({64, 48}, {1, 0}, d);
  }
  // Outer dims around the transposed plane, and a plane whose source-contiguous dim is not
  // the destination's neighbour.
  expect_permuted_copy({3, 40, 50}, {0, 2, 1}, DType::f32);
  expect_permuted_copy({40, 3, 50}, {2, 1, 0}, DType::f32);
  expect_permuted_copy({2, 33, 5, 17}, {3, 0, 2, 1}, DType::f64);
}

TEST(Copy, LargeTransposeSplitsOverThreadsWithTheSameResult) {
  // 600 x 700 = 420K elements: above one parallel chunk, so 2+ threads share the plane.
  ThreadsGuard restore;
  set_num_threads(3);
  expect_permuted_copy({600, 700}, {1, 0}, DType::f32);
}

TEST(Copy, MetaAndDeviceErrors) {
  Tensor cpu = zeros({2, 3});
  Tensor meta = empty({2, 3}, DType::f32, Device::meta());
  try {
    cpu.copy_(meta);
    FAIL();
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot copy from a meta tensor of shape [2, 3]"));
  }
  EXPECT_NO_THROW(meta.copy_(cpu));  // into meta: shape checks only
  EXPECT_THROW(meta.to(Device::cpu()), RuntimeError);
  EXPECT_THROW((void)meta.item_double(), ValueError);  // 6 elements
  EXPECT_THROW((void)empty({}, DType::f32, Device::meta()).item<float>(), RuntimeError);
  Tensor m = cpu.to(Device::meta());
  EXPECT_TRUE(m.is_meta());
  EXPECT_EQ(m.sizes(), cpu.sizes());
#if !defined(LOOM_WITH_CUDA)
  try {
    (void)cpu.to(Device::cuda(0));
    FAIL();
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr(kNoCudaBackend));
  }
#endif
}

TEST(Copy, ToAndClone) {
  Tensor t = iota({2, 3});
  EXPECT_TRUE(t.to(DType::f32).is_same(t));  // nothing to do: the same tensor
  EXPECT_TRUE(t.to(Device::cpu()).is_same(t));
  Tensor d = t.to(DType::f64);
  EXPECT_EQ(d.dtype(), DType::f64);
  EXPECT_NE(d.storage(), t.storage());
  EXPECT_EQ(d.to_double_vector(), t.to_double_vector());
  Tensor e = t.to(Device::cpu(), DType::i32);
  EXPECT_EQ(e.dtype(), DType::i32);
  EXPECT_EQ(t.type_as(e).dtype(), DType::i32);

  Tensor c = t.t().clone();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.sizes(), (Shape{3, 2}));
  EXPECT_NE(c.storage(), t.storage());
  c.fill_(0.0);
  EXPECT_EQ(t.at<float>({1, 2}), 5.0f);
  Tensor c2 = t.clone();
  EXPECT_FALSE(c2.is_same(t));
  EXPECT_TRUE(c2.equal(t));
}

TEST(Copy, ItemAtAndToVector) {
  EXPECT_EQ(scalar_tensor(2.5).item<float>(), 2.5f);
  EXPECT_EQ(scalar_tensor(2.5).item<int64_t>(), 2);
  EXPECT_EQ(full({1, 1}, 3.0, DType::i32).item<int32_t>(), 3);
  EXPECT_TRUE(full({1}, 1.0, DType::bool_).item<bool>());
  EXPECT_EQ(scalar_tensor(0.1, DType::f16).item<double>(), double(f16_to_f32(f32_to_f16(0.1f))));
  try {
    (void)zeros({2, 2}).item<float>();
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("4 elements (shape [2, 2])"));
  }
  EXPECT_THROW((void)zeros({0}).item<float>(), ValueError);

  Tensor t = iota({3, 4}).t();  // a strided view
  EXPECT_EQ(t.at<float>({1, 2}), 9.0f);
  EXPECT_EQ(t.at<int64_t>({-1, -1}), 11);
  EXPECT_EQ(t[3].at<double>({0}), 3.0);
  EXPECT_THROW((void)t.at<float>({4, 0}), ValueError);
  EXPECT_THROW((void)t.at<float>({0}), ValueError);
  std::vector<float> v = t.to_vector<float>();
  EXPECT_EQ(v, (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  std::vector<int64_t> iv = tensor({-1.7, 2.9}).to_vector<int64_t>();
  EXPECT_EQ(iv, (std::vector<int64_t>{-1, 2}));
  EXPECT_TRUE(zeros({0, 3}).to_vector<float>().empty());
}

TEST(Copy, AllcloseAndEqual) {
  Tensor a = tensor({1.0, 2.0, 3.0});
  EXPECT_TRUE(a.allclose(a));
  EXPECT_TRUE(a.allclose(tensor({1.0, 2.0, 3.00001})));
  EXPECT_FALSE(a.allclose(tensor({1.0, 2.0, 3.001})));
  EXPECT_TRUE(a.allclose(tensor({1.0, 2.0, 3.1}), 0.0, 0.11));
  EXPECT_TRUE(a.allclose(tensor({1.1, 2.2, 3.3}), 0.11, 0.0));  // rtol on |other|
  EXPECT_FALSE(a.allclose(tensor({1.0, 2.0})));                 // shapes differ
  EXPECT_FALSE(a.allclose(a.view({3, 1})));
  Tensor n = tensor({1.0, std::nan("")});
  EXPECT_FALSE(n.allclose(n));  // NaN is never close
  Tensor inf = tensor({INFINITY, -INFINITY});
  EXPECT_TRUE(inf.allclose(inf));
  EXPECT_FALSE(inf.allclose(tensor({INFINITY, INFINITY})));
  EXPECT_TRUE(a.allclose(tensor({1, 2, 3})));  // across dtypes
  EXPECT_TRUE(a.equal(tensor({1, 2, 3})));
  EXPECT_FALSE(a.equal(tensor({1.0, 2.0, 3.0000001}, DType::f64)));
  EXPECT_FALSE(a.equal(a.view({1, 3})));
}

}  // namespace
}  // namespace loom
