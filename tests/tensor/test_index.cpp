// Indexing, joining and splitting ops against hand-computed values and f64 loops:
// embedding (+ backward scatter-add), index_select, index_add, tril/triu, cat, stack,
// split, split_with_sizes, chunk. Views must share storage; meta must not allocate.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tensor/allocator.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

Tensor iota(const Shape& shape, DType dtype = DType::f32) {
  return native::reshape(arange(0, double(shape_numel(shape)), 1, dtype), shape);
}

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no ValueError";
}

// ---- embedding ----

TEST(Embedding, GathersRowsForAnyIndexShape) {
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i64}) {
    Tensor w = iota({5, 3}, t);
    Tensor idx = from_vector<int64_t>({4, 0, 4, 2}, Shape{2, 2});
    Tensor out = native::embedding(w, idx);
    EXPECT_EQ(out.sizes(), (Shape{2, 2, 3}));
    EXPECT_EQ(out.dtype(), t);
    EXPECT_EQ(out.to_vector<double>(),
              (std::vector<double>{12, 13, 14, 0, 1, 2, 12, 13, 14, 6, 7, 8}));
  }
  // i32 indices and a non-contiguous (transposed) weight.
  Tensor w = native::transpose(iota({3, 5}), 0, 1);  // (5, 3): w[i, j] = j * 5 + i
  Tensor out = native::embedding(w, from_vector<int32_t>({1, 3}));
  EXPECT_EQ(out.to_vector<double>(), (std::vector<double>{1, 6, 11, 3, 8, 13}));
}

TEST(Embedding, OutOfRangeIndexNamesIndexAndRows) {
  Tensor w = zeros({10, 4});
  std::string msg = error_of([&] { native::embedding(w, from_vector<int64_t>({3, 12})); });
  EXPECT_THAT(msg, HasSubstr("embedding: index 12 is out of range"));
  EXPECT_THAT(msg, HasSubstr("10"));
  EXPECT_THAT(error_of([&] { native::embedding(w, from_vector<int64_t>({-1})); }),
              HasSubstr("index -1"));
  EXPECT_THAT(error_of([&] { native::embedding(w, zeros({2})); }), HasSubstr("i64 or i32"));
}

TEST(Embedding, BackwardScatterAddsAndRepeatsAddUp) {
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    Tensor idx = from_vector<int64_t>({1, 3, 1, 1}, Shape{2, 2});
    Tensor g = native::reshape(arange(1, 9, 1, t), {2, 2, 2});  // rows [1,2] [3,4] [5,6] [7,8]
    Tensor gw = native::embedding_backward(g, idx, 5);
    EXPECT_EQ(gw.sizes(), (Shape{5, 2}));
    EXPECT_EQ(gw.dtype(), t);
    // Row 1 gets rows 0, 2, 3 of g: [1+5+7, 2+6+8]; row 3 gets [3, 4].
    EXPECT_EQ(gw.to_vector<double>(), (std::vector<double>{0, 0, 13, 16, 0, 0, 3, 4, 0, 0}));
  }
}

TEST(Embedding, BackwardMatchesLoopOnLargeInput) {
  manual_seed(3);
  const int64_t v = 37, d = 70, n = 3000;  // large enough to split across threads
  Tensor idx = randint(0, v, {n});
  Tensor g = randn({n, d}, DType::f64);
  Tensor gw = native::embedding_backward(g, idx, v);
  std::vector<double> ref(size_t(v * d), 0.0), gv = g.to_double_vector();
  std::vector<int64_t> iv = idx.to_vector<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) ref[size_t(iv[size_t(i)] * d + j)] += gv[size_t(i * d + j)];
  EXPECT_TRUE(gw.allclose(from_vector<double>(ref, Shape{v, d}), 1e-12, 1e-12));
}

TEST(Embedding, BackwardShapeError) {
  EXPECT_THAT(error_of([] {
                native::embedding_backward(zeros({3, 4}), from_vector<int64_t>({0, 1}), 5);
              }),
              HasSubstr("embedding_backward: grad_out [3, 4]"));
}

// ---- index_select / index_add ----

TEST(IndexSelect, AlongEachDim) {
  Tensor x = iota({2, 3, 4});
  Tensor idx = from_vector<int64_t>({2, 0, 2});
  Tensor d1 = native::index_select(x, 1, idx);
  EXPECT_EQ(d1.sizes(), (Shape{2, 3, 4}));
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t c = 0; c < 4; ++c)
        EXPECT_EQ(d1.at<double>({a, j, c}), x.at<double>({a, idx.at<int64_t>({j}), c}));
  Tensor d2 = native::index_select(x, -1, from_vector<int64_t>({3, 1}));
  EXPECT_EQ(d2.sizes(), (Shape{2, 3, 2}));
  EXPECT_EQ(d2.at<double>({1, 2, 0}), x.at<double>({1, 2, 3}));
  Tensor d0 = native::index_select(native::transpose(x, 0, 2), 0, from_vector<int64_t>({1}));
  EXPECT_EQ(d0.sizes(), (Shape{1, 3, 2}));
  EXPECT_EQ(d0.at<double>({0, 2, 1}), x.at<double>({1, 2, 1}));
  EXPECT_THAT(error_of([&] { native::index_select(x, 1, from_vector<int64_t>({3})); }),
              HasSubstr("index_select: index 3 is out of range"));
}

TEST(IndexAdd, RepeatedIndicesAddUp) {
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::i64}) {
    Tensor x = native::to(ones({3, 2}), Device::cpu(), t);
    Tensor s = native::reshape(arange(1, 9, 1, t), {4, 2});
    Tensor out = native::index_add(x, 0, from_vector<int64_t>({2, 0, 2, 2}), s);
    // Row 2 = 1 + [1,2] + [5,6] + [7,8]; row 0 = 1 + [3, 4].
    EXPECT_EQ(out.to_vector<double>(), (std::vector<double>{4, 5, 1, 1, 14, 17}));
    EXPECT_EQ(x.to_vector<double>(), (std::vector<double>(6, 1.0)));  // input untouched
  }
  Tensor x = zeros({2, 3});
  Tensor out = native::index_add(x, 1, from_vector<int64_t>({1, 1}), ones({2, 2}));
  EXPECT_EQ(out.to_vector<double>(), (std::vector<double>{0, 2, 0, 0, 2, 0}));
  EXPECT_THAT(error_of([&] { native::index_add(x, 1, from_vector<int64_t>({1}), ones({2, 2})); }),
              HasSubstr("index_add: source has shape [2, 2]"));
  EXPECT_THAT(error_of([&] {
                native::index_add(x, 1, from_vector<int64_t>({1}), ones({2, 1}, DType::f64));
              }),
              HasSubstr("dtype"));
}

// ---- tril / triu ----

TEST(Triangle, DiagonalOffsetsAndBatches) {
  Tensor x = native::to(ones({2, 3, 4}), Device::cpu(), DType::f32);
  for (int64_t diag : {-2, -1, 0, 1, 3, 5}) {
    Tensor lo = native::tril(x, diag), up = native::triu(x, diag);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 4; ++j) {
          EXPECT_EQ(lo.at<double>({b, i, j}), j - i <= diag ? 1.0 : 0.0);
          EXPECT_EQ(up.at<double>({b, i, j}), j - i >= diag ? 1.0 : 0.0);
        }
  }
  Tensor v = iota({3, 3}, DType::i64);
  EXPECT_EQ(native::tril(native::transpose(v, 0, 1), 0).to_vector<int64_t>(),
            (std::vector<int64_t>{0, 0, 0, 1, 4, 0, 2, 5, 8}));
  EXPECT_EQ(native::triu(native::to(ones({2, 2}), Device::cpu(), DType::bool_), 1).to_vector<int>(),
            (std::vector<int>{0, 1, 0, 0}));
  EXPECT_THAT(error_of([] { native::tril(zeros({3}), 0); }), HasSubstr("tril: input must have"));
}

// ---- cat / stack ----

TEST(Cat, AlongDimsWithPromotionAndNonContiguous) {
  Tensor a = iota({2, 3}), b = native::transpose(iota({2, 2}), 0, 1);  // b (2, 2)
  Tensor c = native::cat({a, b}, 1);
  EXPECT_EQ(c.sizes(), (Shape{2, 5}));
  EXPECT_EQ(c.to_vector<double>(), (std::vector<double>{0, 1, 2, 0, 2, 3, 4, 5, 1, 3}));
  Tensor d = native::cat({a, iota({1, 3}, DType::f64)}, 0);
  EXPECT_EQ(d.dtype(), DType::f64);
  EXPECT_EQ(d.to_vector<double>(), (std::vector<double>{0, 1, 2, 3, 4, 5, 0, 1, 2}));
  // The legacy rule: a 1-D empty tensor is skipped.
  EXPECT_EQ(native::cat({zeros({0}), a}, -1).sizes(), (Shape{2, 3}));
}

TEST(Cat, ErrorsNameTensorIndexAndShapes) {
  std::string msg = error_of([] { native::cat({zeros({2, 3}), zeros({2, 3}), zeros({4, 4})}, 0); });
  EXPECT_THAT(msg, HasSubstr("cat: sizes of tensors must match except in dimension 0"));
  EXPECT_THAT(msg, HasSubstr("tensor 2 has shape [4, 4]"));
  EXPECT_THAT(msg, HasSubstr("[2, 3]"));
  EXPECT_THAT(error_of([] { native::cat({zeros({2, 3}), zeros({3})}, 0); }),
              HasSubstr("tensor 1 has 1 dims"));
  EXPECT_THAT(error_of([] { native::cat({}, 0); }), HasSubstr("non-empty"));
}

TEST(Stack, NewDimAnywhere) {
  Tensor a = iota({2, 3}), b = native::to(ones({2, 3}), Device::cpu(), DType::f32);
  Tensor s0 = native::stack({a, b}, 0);
  EXPECT_EQ(s0.sizes(), (Shape{2, 2, 3}));
  Tensor s2 = native::stack({a, b}, -1);
  EXPECT_EQ(s2.sizes(), (Shape{2, 3, 2}));
  EXPECT_EQ(s2.at<double>({1, 2, 0}), 5.0);
  EXPECT_EQ(s2.at<double>({1, 2, 1}), 1.0);
  EXPECT_THAT(error_of([&] { native::stack({a, zeros({3, 2})}, 0); }),
              HasSubstr("tensor 1 has shape [3, 2]"));
}

// ---- split / chunk ----

TEST(Split, ViewsShareStorage) {
  Tensor x = iota({7, 2});
  TensorList parts = native::split(x, 3, 0);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].sizes(), (Shape{3, 2}));
  EXPECT_EQ(parts[2].sizes(), (Shape{1, 2}));
  for (const Tensor& p : parts) EXPECT_EQ(p.storage().get(), x.storage().get());
  EXPECT_EQ(parts[2].at<double>({0, 1}), 13.0);
  native::fill_(parts[1], -1.0);  // writes through to x
  EXPECT_EQ(x.at<double>({4, 0}), -1.0);
  EXPECT_EQ(native::split(x, 10, 0).size(), 1u);
  TensorList cols = native::split(x, 1, 1);
  EXPECT_EQ(cols.size(), 2u);
  EXPECT_EQ(cols[1].to_vector<double>()[0], 1.0);
}

TEST(Split, WithSizes) {
  Tensor x = iota({2, 6});
  TensorList parts = native::split_with_sizes(x, {1, 0, 5}, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[1].sizes(), (Shape{2, 0}));
  EXPECT_EQ(parts[2].to_vector<double>(), (std::vector<double>{1, 2, 3, 4, 5, 7, 8, 9, 10, 11}));
  EXPECT_EQ(parts[2].storage().get(), x.storage().get());
  EXPECT_THAT(error_of([&] { native::split_with_sizes(x, {2, 2}, 1); }),
              HasSubstr("sum to 4"));
  EXPECT_THAT(error_of([&] { native::split(x, 0, 1); }), HasSubstr("split_size"));
}

TEST(Chunk, PyTorchSizingRule) {
  auto sizes_of = [](const TensorList& l) {
    Shape s;
    for (const Tensor& t : l) s.push_back(t.sizes()[0]);
    return s;
  };
  // Chunks of ceil(size / chunks): 5 into 3 -> [2, 2, 1]; 6 into 4 -> [2, 2, 2] (only 3).
  EXPECT_EQ(sizes_of(native::chunk(zeros({5}), 3, 0)), (Shape{2, 2, 1}));
  EXPECT_EQ(sizes_of(native::chunk(zeros({6}), 4, 0)), (Shape{2, 2, 2}));
  EXPECT_EQ(sizes_of(native::chunk(zeros({2}), 5, 0)), (Shape{1, 1}));
  EXPECT_EQ(sizes_of(native::chunk(zeros({0}), 3, 0)), (Shape{0, 0, 0}));
  Tensor x = iota({4, 6});
  TensorList c = native::chunk(x, 3, 1);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[2].at<double>({3, 1}), 23.0);
  EXPECT_EQ(c[2].storage().get(), x.storage().get());
  EXPECT_THAT(error_of([&] { native::chunk(x, 0, 0); }), HasSubstr("chunks must be positive"));
}

// ---- meta ----

TEST(IndexMeta, ShapesWithoutAllocating) {
  Device m = Device::meta();
  Tensor w = native::empty({1000, 64}, DType::bf16, m);
  Tensor idx = native::empty({4, 8}, DType::i64, m);
  Tensor x = native::empty({2, 5, 6}, DType::f32, m);
  int64_t allocs = memory_stats().num_allocs, bytes = memory_stats().current_bytes;
  Tensor e = native::embedding(w, idx);
  EXPECT_EQ(e.sizes(), (Shape{4, 8, 64}));
  EXPECT_EQ(e.dtype(), DType::bf16);
  EXPECT_TRUE(e.is_meta());
  EXPECT_EQ(native::embedding_backward(native::empty({4, 8, 64}, DType::f32, m), idx, 1000).sizes(),
            (Shape{1000, 64}));
  Tensor i1 = native::empty({3}, DType::i64, m);
  EXPECT_EQ(native::index_select(x, 1, i1).sizes(), (Shape{2, 3, 6}));
  EXPECT_EQ(native::index_add(x, 1, i1, native::empty({2, 3, 6}, DType::f32, m)).sizes(),
            (Shape{2, 5, 6}));
  EXPECT_TRUE(native::tril(x, 0).is_meta());
  EXPECT_EQ(native::triu(x, 1).sizes(), (Shape{2, 5, 6}));
  Tensor c = native::cat({x, native::empty({2, 1, 6}, DType::f64, m)}, 1);
  EXPECT_EQ(c.sizes(), (Shape{2, 6, 6}));
  EXPECT_EQ(c.dtype(), DType::f64);
  EXPECT_EQ(native::stack({x, x}, 1).sizes(), (Shape{2, 2, 5, 6}));
  EXPECT_EQ(native::chunk(x, 2, 1).size(), 2u);
  EXPECT_TRUE(native::split(x, 2, 2)[0].is_meta());
  EXPECT_EQ(memory_stats().num_allocs, allocs);
  EXPECT_EQ(memory_stats().current_bytes, bytes);
  EXPECT_THAT(error_of([&] { native::embedding(w, zeros({2}, DType::i64)); }),
              HasSubstr("different devices"));
  EXPECT_THAT(error_of([&] { native::cat({x, zeros({2, 5, 6})}, 0); }), HasSubstr("tensor 1 is on"));
}

}  // namespace
}  // namespace loom
