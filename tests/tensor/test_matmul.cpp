// native::matmul and native::linear against naive f64 loops: every PyTorch shape case,
// transposed and non-contiguous operands, broadcast batch dims, every floating dtype,
// meta shape inference and error messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <utility>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/gemm.h"
#include "kernels/threads_guard.h"
#include "tensor/allocator.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

// Random values of `dtype`: drawn in f64, then rounded to the dtype.
Tensor rnd(const Shape& shape, DType dtype = DType::f32) {
  return native::to(randn(shape, DType::f64), Device::cpu(), dtype);
}

// Row-major index -> multi-index of `shape`.
Shape unravel(int64_t i, const Shape& shape) {
  Shape idx(shape.size());
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  return idx;
}

// Linear offset into a row-major `shape` of an index into the broadcast `batch` shape.
int64_t batch_offset(const Shape& idx, const Shape& shape) {
  int64_t off = 0;
  size_t lead = idx.size() - shape.size();
  for (size_t d = 0; d < shape.size(); ++d) off = off * shape[d] + (shape[d] == 1 ? 0 : idx[lead + d]);
  return off;
}

// PyTorch's matmul in f64 over the values the operands hold. abs_sum[i] = sum |a||b| bounds
// the rounding error of element i.
struct Ref {
  Shape shape;
  std::vector<double> value, abs_sum;
};

Ref ref_matmul(const Tensor& a, const Tensor& b) {
  std::vector<double> av = a.to_double_vector(), bv = b.to_double_vector();
  Shape as = a.sizes(), bs = b.sizes();
  const bool a1 = as.size() == 1, b1 = bs.size() == 1;
  if (a1) as.insert(as.begin(), 1);
  if (b1) bs.push_back(1);
  const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
  Shape ba(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "ref");
  int64_t nb = shape_numel(batch);
  Ref r;
  r.shape = batch;
  if (!a1) r.shape.push_back(m);
  if (!b1) r.shape.push_back(n);
  r.value.assign(size_t(nb * m * n), 0.0);
  r.abs_sum.assign(r.value.size(), 0.0);
  for (int64_t bi = 0; bi < nb; ++bi) {
    Shape idx = unravel(bi, batch);
    int64_t ao = batch_offset(idx, ba) * m * k, bo = batch_offset(idx, bb) * k * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0, sa = 0;
        for (int64_t p = 0; p < k; ++p) {
          double x = av[size_t(ao + i * k + p)] * bv[size_t(bo + p * n + j)];
          s += x;
          sa += std::abs(x);
        }
        r.value[size_t((bi * m + i) * n + j)] = s;
        r.abs_sum[size_t((bi * m + i) * n + j)] = sa;
      }
  }
  return r;
}

// Unit roundoff of the output dtype and of the accumulation (f32 for the 16-bit floats).
double eps_out(DType t) {
  switch (t) {
    case DType::f64: return 1.2e-16;
    case DType::f32: return 6e-8;
    case DType::f16: return 4.9e-4;
    default: return 3.9e-3;
  }
}
double eps_acc(DType t) { return t == DType::f64 ? 1.2e-16 : 6e-8; }

void expect_close(const Tensor& out, const Ref& r, int64_t k) {
  ASSERT_EQ(out.sizes(), r.shape);
  std::vector<double> v = out.to_double_vector();
  ASSERT_EQ(v.size(), r.value.size());
  DType t = out.dtype();
  for (size_t i = 0; i < v.size(); ++i) {
    double tol = 2 * (eps_out(t) + double(k + 1) * eps_acc(t)) * r.abs_sum[i] + 1e-12;
    ASSERT_NEAR(v[i], r.value[i], tol) << "element " << i << " dtype " << t;
  }
}

void check(const Tensor& a, const Tensor& b) {
  int64_t k = a.sizes().back();
  expect_close(native::matmul(a, b), ref_matmul(a, b), k);
}

constexpr DType kFloats[] = {DType::f64, DType::f32, DType::f16, DType::bf16};

class MatmulDTypes : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulDTypes, VectorVectorIsDot0Dim) {
  manual_seed(1);
  Tensor a = rnd({7}, GetParam()), b = rnd({7}, GetParam());
  Tensor out = native::matmul(a, b);
  EXPECT_EQ(out.dim(), 0);
  EXPECT_EQ(out.dtype(), GetParam());
  check(a, b);
}

TEST_P(MatmulDTypes, MatrixVectorAndVectorMatrix) {
  manual_seed(2);
  DType t = GetParam();
  check(rnd({5, 7}, t), rnd({7}, t));
  check(rnd({7}, t), rnd({7, 4}, t));
  EXPECT_EQ(native::matmul(rnd({5, 7}, t), rnd({7}, t)).sizes(), (Shape{5}));
  EXPECT_EQ(native::matmul(rnd({7}, t), rnd({7, 4}, t)).sizes(), (Shape{4}));
}

TEST_P(MatmulDTypes, MatrixMatrix) {
  manual_seed(3);
  DType t = GetParam();
  check(rnd({13, 17}, t), rnd({17, 11}, t));
  check(rnd({1, 5}, t), rnd({5, 1}, t));
}

TEST_P(MatmulDTypes, TransposedOperandsAllFourCombinations) {
  manual_seed(4);
  DType t = GetParam();
  Tensor a = rnd({9, 6}, t), at = native::transpose(rnd({6, 9}, t), 0, 1);  // (9, 6)
  Tensor b = rnd({6, 8}, t), bt = native::transpose(rnd({8, 6}, t), 0, 1);  // (6, 8)
  check(a, b);
  check(at, b);
  check(a, bt);
  check(at, bt);
}

TEST_P(MatmulDTypes, NonContiguousSlicesAreHandled) {
  manual_seed(5);
  DType t = GetParam();
  // Every other column: neither stride is 1, so BLAS cannot read it as it is.
  Tensor a = native::slice(rnd({8, 20}, t), 1, 0, std::nullopt, 2);  // (8, 10)
  Tensor b = native::slice(rnd({20, 7}, t), 0, 0, std::nullopt, 2);  // (10, 7)
  ASSERT_FALSE(a.is_contiguous());
  check(a, b);
  check(native::transpose(b, 0, 1), native::transpose(a, 0, 1));
}

TEST_P(MatmulDTypes, BatchedAndBroadcastBatchDims) {
  manual_seed(6);
  DType t = GetParam();
  check(rnd({3, 4, 5}, t), rnd({3, 5, 6}, t));
  check(rnd({2, 1, 4, 5}, t), rnd({3, 5, 6}, t));  // -> (2, 3, 4, 6)
  check(rnd({1, 4, 5}, t), rnd({2, 3, 5, 6}, t));
  EXPECT_EQ(native::matmul(rnd({2, 1, 4, 5}, t), rnd({3, 5, 6}, t)).sizes(), (Shape{2, 3, 4, 6}));
}

TEST_P(MatmulDTypes, VectorWithBatched) {
  manual_seed(7);
  DType t = GetParam();
  check(rnd({5}, t), rnd({2, 3, 5, 4}, t));  // -> (2, 3, 4)
  check(rnd({2, 3, 4, 5}, t), rnd({5}, t));  // -> (2, 3, 4)
  EXPECT_EQ(native::matmul(rnd({5}, t), rnd({2, 3, 5, 4}, t)).sizes(), (Shape{2, 3, 4}));
  EXPECT_EQ(native::matmul(rnd({2, 3, 4, 5}, t), rnd({5}, t)).sizes(), (Shape{2, 3, 4}));
}

TEST_P(MatmulDTypes, BatchedTimesMatrixAndMatrixTimesBatched) {
  manual_seed(8);
  DType t = GetParam();
  check(rnd({2, 6, 5}, t), rnd({5, 3}, t));        // folds into one (12, 5) @ (5, 3)
  check(rnd({4, 5}, t), rnd({2, 3, 5, 6}, t));     // A broadcast over the batch
  // A batch whose rows do not fold (per-batch transposed), and a transposed weight.
  Tensor a = native::transpose(rnd({2, 5, 6}, t), 1, 2);  // (2, 6, 5)
  Tensor w = native::transpose(rnd({3, 5}, t), 0, 1);     // (5, 3)
  check(a, w);
  // A sliced batch (every other batch element) still folds per row with its own stride.
  Tensor s = native::slice(rnd({4, 6, 5}, t), 0, 0, std::nullopt, 2);
  check(s, w);
}

INSTANTIATE_TEST_SUITE_P(Floats, MatmulDTypes, ::testing::ValuesIn(kFloats),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Matmul, HandComputed) {
  for (DType t : kFloats) {
    Tensor a = from_vector<double>({1, 2, 3, 4}, Shape{2, 2}, t);
    Tensor b = from_vector<double>({5, 6, 7, 8}, Shape{2, 2}, t);
    // [[1*5+2*7, 1*6+2*8], [3*5+4*7, 3*6+4*8]]
    EXPECT_EQ(native::matmul(a, b).to_vector<double>(), (std::vector<double>{19, 22, 43, 50}));
    // a^T b = [[1*5+3*7, 1*6+3*8], [2*5+4*7, 2*6+4*8]]
    EXPECT_EQ(native::matmul(native::transpose(a, 0, 1), b).to_vector<double>(),
              (std::vector<double>{26, 30, 38, 44}));
    EXPECT_EQ(native::matmul(native::select(a, 0, 1), native::select(b, 1, 0)).item<double>(),
              3.0 * 5 + 4 * 7);
  }
}

TEST(Matmul, ManySmallGemmsRunInParallelOverTheBatch) {
  manual_seed(9);
  for (DType t : {DType::f32, DType::bf16}) check(rnd({64, 8, 9}, t), rnd({64, 9, 7}, t));
}

TEST(Matmul, LargeBatchedGemmsRunOneAfterAnother) {
  manual_seed(10);
  check(rnd({3, 100, 80}, DType::f32), rnd({3, 80, 70}, DType::f32));
  check(rnd({3, 100, 80}, DType::f64), rnd({1, 80, 70}, DType::f64));
}

TEST(Matmul, LowPrecisionCrossesPanelAndKBlockBoundaries) {
  manual_seed(11);
  // M > 256 rows per block, N > one panel, K > 2048 per K block.
  for (DType t : {DType::f16, DType::bf16}) {
    check(rnd({260, 2100}, t), rnd({2100, 300}, t));
    check(native::transpose(rnd({2100, 260}, t), 0, 1), native::transpose(rnd({300, 2100}, t), 0, 1));
  }
}

// What loom promises across thread counts (docs/design.md "Determinism"). At a fixed thread
// count every result is reproducible bit for bit, so DDP ranks and resumed runs agree. Across
// thread counts, GEMMs that OpenBLAS runs agree within the error bound of a GEMM in the
// accumulation dtype, not bit for bit: OpenBLAS splits a GEMM differently by thread count, and
// some of its kernels then round differently (Haswell's kernel on an AVX-512 CPU, measured:
// 1024^2 outputs, 59391 differ between 1 and 2 threads). loom's own kernels (the skinny GEMMs,
// elementwise ops and reductions) do not depend on the thread count at all.
TEST(Matmul, ThreadCountChangesOpenBlasResultsOnlyWithinTheErrorBound) {
  manual_seed(12);
  ThreadsGuard restore;
  const std::vector<std::pair<Tensor, Tensor>> cases = {
      {rnd({4, 64, 64}), rnd({64, 64})},                    // folded into one 256 x 64 GEMM
      {rnd({6, 40, 96}), rnd({6, 96, 72})},                 // a batch of small GEMMs
      {rnd({300, 500}), rnd({500, 260})},                   // one GEMM large enough to thread
      {rnd({3, 200, 130}, DType::bf16), rnd({130, 150}, DType::bf16)},  // 16-bit panels
      {native::transpose(rnd({512, 256}), 0, 1), rnd({512, 384})}};
  for (const auto& [a, b] : cases) {
    int64_t k = a.sizes().back();
    Ref r = ref_matmul(a, b);
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      Tensor first = native::matmul(a, b);
      Tensor again = native::matmul(a, b);
      EXPECT_TRUE(first.equal(again)) << threads << " threads: not reproducible, shape "
                                      << shape_str(a.sizes());
      expect_close(first, r, k);
    }
  }
}

TEST(Matmul, LoomsOwnSkinnyKernelsDoNotDependOnThreadCount) {
  manual_seed(13);
  ThreadsGuard restore;
  // At avx2 every shape below takes a skinny kernel; from avx512 oneDNN takes those where it is
  // faster (kernels/cpu/gemm.cpp, skinny_beats_onednn).
  CpuLevelGuard skinny_everywhere(CpuLevel::avx2);
  // x @ w^T with N <= 16 (dot products), K <= 16 and M <= 16 (row updates); each is large
  // enough to be split over the pool.
  const std::vector<std::pair<Tensor, Tensor>> cases = {
      {rnd({2048, 512}), native::transpose(rnd({10, 512}), 0, 1)},
      {rnd({2048, 8}), rnd({8, 1024})},
      {rnd({12, 1024}), rnd({1024, 480})},
      {rnd({4096, 256}), native::transpose(rnd({16, 256}), 0, 1)}};
  for (const auto& [a, b] : cases) {
    set_num_threads(1);
    Tensor one = native::matmul(a, b);
    set_num_threads(2);
    Tensor two = native::matmul(a, b);
    EXPECT_TRUE(one.equal(two)) << shape_str(a.sizes()) << " @ " << shape_str(b.sizes());
    expect_close(two, ref_matmul(a, b), a.sizes().back());
  }
}

TEST(Matmul, EmptyDims) {
  Tensor out = native::matmul(zeros({3, 0}), zeros({0, 4}));
  EXPECT_EQ(out.sizes(), (Shape{3, 4}));
  EXPECT_TRUE(out.equal(zeros({3, 4})));
  EXPECT_EQ(native::matmul(zeros({0, 5}), zeros({5, 4})).sizes(), (Shape{0, 4}));
  EXPECT_EQ(native::matmul(zeros({2, 0, 5}), zeros({5, 4})).sizes(), (Shape{2, 0, 4}));
}

TEST(Matmul, ShapeErrorNamesBothShapes) {
  try {
    native::matmul(zeros({2, 3}), zeros({4, 5}));
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("matmul: shapes [2, 3] and [4, 5] cannot be multiplied (3 != 4)"));
  }
  EXPECT_THROW(native::matmul(zeros({3}), zeros({4})), ValueError);
  EXPECT_THROW(native::matmul(zeros({2, 2, 3}), zeros({3, 2, 3})), ValueError);
}

TEST(Matmul, BatchDimsThatDoNotBroadcastAreRefused) {
  try {
    native::matmul(zeros({2, 4, 5}), zeros({3, 5, 6}));
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("matmul"));
  }
}

TEST(Matmul, DTypeMismatchSaysToConvert) {
  try {
    native::matmul(zeros({2, 3}, DType::f32), zeros({3, 2}, DType::f64));
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("same dtype"));
    EXPECT_THAT(e.what(), HasSubstr(".to("));
  }
}

TEST(Matmul, IntegerAndZeroDimAreRefused) {
  try {
    native::matmul(zeros({2, 3}, DType::i64), zeros({3, 2}, DType::i64));
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("not supported"));
    EXPECT_THAT(e.what(), HasSubstr("PyTorch"));
  }
  EXPECT_THROW(native::matmul(scalar_tensor(2.0), zeros({3})), ValueError);
}

TEST(Matmul, MetaInfersShapesWithoutAllocating) {
  Tensor a = native::empty({8, 1, 128, 64}, DType::bf16, Device::meta());
  Tensor b = native::empty({3, 64, 32}, DType::bf16, Device::meta());
  int64_t allocs = memory_stats().num_allocs, bytes = memory_stats().current_bytes;
  Tensor out = native::matmul(a, b);
  EXPECT_TRUE(out.is_meta());
  EXPECT_EQ(out.sizes(), (Shape{8, 3, 128, 32}));
  EXPECT_EQ(out.dtype(), DType::bf16);
  Tensor v = native::matmul(native::empty({64}, DType::f32, Device::meta()),
                            native::empty({64}, DType::f32, Device::meta()));
  EXPECT_EQ(v.dim(), 0);
  Tensor w = native::empty({16, 64}, DType::f32, Device::meta());
  Tensor y = native::linear(native::empty({4, 10, 64}, DType::f32, Device::meta()), w,
                            native::empty({16}, DType::f32, Device::meta()));
  EXPECT_EQ(y.sizes(), (Shape{4, 10, 16}));
  EXPECT_TRUE(y.is_meta());
  EXPECT_EQ(memory_stats().num_allocs, allocs);
  EXPECT_EQ(memory_stats().current_bytes, bytes);
  EXPECT_THROW(native::matmul(a, native::empty({3, 64, 32}, DType::bf16, Device::cpu())),
               ValueError);
}

// ---- linear ----

// x (..., in) @ weight(out, in)^T + bias, through ref_matmul.
void check_linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  Tensor out = native::linear(x, w, bias);
  Ref r = ref_matmul(x, native::contiguous(native::transpose(w, 0, 1)));
  if (bias.defined()) {
    std::vector<double> bv = bias.to_double_vector();
    for (size_t i = 0; i < r.value.size(); ++i) {
      r.value[i] += bv[i % bv.size()];
      r.abs_sum[i] += std::abs(bv[i % bv.size()]);
    }
  }
  expect_close(out, r, x.sizes().back());
}

TEST_P(MatmulDTypes, LinearWithAndWithoutBias) {
  manual_seed(13);
  DType t = GetParam();
  Tensor w = rnd({6, 5}, t), bias = rnd({6}, t);
  check_linear(rnd({4, 5}, t), w, bias);
  check_linear(rnd({4, 5}, t), w, Tensor());
  check_linear(rnd({2, 3, 5}, t), w, bias);
  check_linear(rnd({5}, t), w, bias);
  EXPECT_EQ(native::linear(rnd({5}, t), w, bias).sizes(), (Shape{6}));
  // Non-contiguous input (per-batch transposed) and a transposed weight view.
  Tensor x = native::transpose(rnd({2, 5, 3}, t), 1, 2);  // (2, 3, 5)
  Tensor wt = native::transpose(rnd({5, 6}, t), 0, 1);   // (6, 5)
  check_linear(x, wt, bias);
}

// ---- f32 GEMMs with one dimension of 16 or less (kernels/cpu/gemm_skinny.cpp) ----
// At avx2, where every such shape takes a skinny kernel (from avx512 oneDNN takes those where it
// is faster, kernels/cpu/gemm.cpp; tests/tensor/test_matmul_capabilities.cpp covers that path).

Tensor t2(const Tensor& x) { return native::transpose(x, 0, 1); }

TEST(MatmulSkinny, SmallKAndSmallMRowsKernelAcrossBlockEdges) {
  CpuLevelGuard skinny_everywhere(CpuLevel::avx2);
  manual_seed(21);
  // (M, K, N): rows in blocks of 6 and a ragged rest, columns in 16s and a masked rest.
  for (auto [m, k, n] : {std::tuple{257, 10, 1023}, {7, 3, 17}, {13, 16, 33}, {6, 1, 16},
                         {10, 256, 1030}, {1, 300, 5}, {16, 64, 16}, {5, 7, 1}}) {
    SCOPED_TRACE(testing::Message() << m << "x" << k << "x" << n);
    check(rnd({m, k}), rnd({k, n}));
    check(t2(rnd({k, m})), rnd({k, n}));  // A transposed: the rows kernel reads any A strides
  }
}

TEST(MatmulSkinny, SmallNDotsKernelAcrossBlockEdges) {
  CpuLevelGuard skinny_everywhere(CpuLevel::avx2);
  manual_seed(22);
  // B is a transposed weight (unit stride along K), as in Linear; K has a tail past the 8s.
  for (auto [m, k, n] : {std::tuple{259, 1027, 10}, {5, 9, 1}, {33, 100, 16}, {3, 7, 2}}) {
    SCOPED_TRACE(testing::Message() << m << "x" << k << "x" << n);
    check(rnd({m, k}), t2(rnd({n, k})));
  }
  // The same through linear, whose bias pre-fills C (beta = 1), batched over a leading dim.
  check_linear(rnd({37, 1024}), rnd({10, 1024}), rnd({10}));
  check_linear(rnd({3, 11, 40}), rnd({5, 40}), rnd({5}));
}

// C = A @ B + C through the f32 kernel itself: beta = 1 adds to what C holds.
TEST(MatmulSkinny, BetaOneAddsToTheOutputInBothKernels) {
  CpuLevelGuard skinny_everywhere(CpuLevel::avx2);
  manual_seed(23);
  auto run = [](const Tensor& a, const Tensor& b, const Tensor& c) {
    kernels::cpu::GemmArgs g;
    g.m = a.size(0), g.n = b.size(1), g.k = a.size(1);
    g.a = a.raw_data_ptr(), g.a_rs = a.stride(0), g.a_cs = a.stride(1);
    g.b = b.raw_data_ptr(), g.b_rs = b.stride(0), g.b_cs = b.stride(1);
    g.c = c.raw_data_ptr(), g.c_rs = c.stride(0), g.c_cs = c.stride(1);
    g.beta = 1.0f;
    kernels::cpu::gemm_table().get(DeviceType::cpu, DType::f32, "matmul")(g);
  };
  for (auto [a, b] : {std::pair{rnd({30, 5}), rnd({5, 40})},           // rows, small K
                      std::pair{rnd({4, 50}), rnd({50, 21})},           // rows, small M
                      std::pair{rnd({30, 50}), t2(rnd({7, 50}))}}) {    // dots, small N
    Tensor c0 = rnd({a.size(0), b.size(1)});
    Tensor c = native::clone(c0);
    run(a, b, c);
    Tensor want = native::binary(native::BinaryOp::add, native::matmul(a.to(DType::f64), b.to(DType::f64)),
                                 c0.to(DType::f64));
    EXPECT_TRUE(c.to(DType::f64).allclose(want, 1e-5, 1e-5));
  }
}

TEST(MatmulSkinny, SplitOverThreadsGivesTheSameBits) {
  CpuLevelGuard skinny_everywhere(CpuLevel::avx2);
  manual_seed(24);
  // Large enough to split: rows of C (small K, small N) and 16-column blocks (small M).
  const std::pair<Tensor, Tensor> cases[] = {{rnd({600, 8}), rnd({8, 2048})},
                                             {rnd({2000, 512}), t2(rnd({9, 512}))},
                                             {rnd({16, 256}), rnd({256, 1900})}};
  ThreadsGuard restore;
  for (const auto& [a, b] : cases) {
    set_num_threads(1);
    Tensor one = native::matmul(a, b);
    set_num_threads(3);
    Tensor three = native::matmul(a, b);
    EXPECT_TRUE(one.equal(three));
    check(a, b);
  }
}

// x @ w^T with w's rows 4 KiB apart (K a multiple of 1024) and 32-512 rows of x: the f32
// kernel computes C^T and adds it back transposed (kernels/cpu/gemm.cpp).
TEST(MatmulTransposedC, LinearShapedProductsMatchTheReference) {
  manual_seed(25);
  // Rows and columns off the 8 x 8 blocks (37, 29), the edges of the M range (32, 512),
  // K = 2048, and a batch folded into rows.
  for (auto [m, k, n] : {std::tuple{37, 1024, 29}, {32, 1024, 64}, {512, 1024, 40},
                         {100, 2048, 17}}) {
    SCOPED_TRACE(testing::Message() << m << "x" << k << "x" << n);
    check(rnd({m, k}), t2(rnd({n, k})));
  }
  // Through linear: the bias pre-fills C, so the transposed product is added to it.
  check_linear(rnd({100, 1024}), rnd({50, 1024}), rnd({50}));
  check_linear(rnd({3, 40, 1024}), rnd({24, 1024}), rnd({24}));
  ThreadsGuard restore;
  set_num_threads(3);  // 512 x 1000 outputs: the transposing pass splits over threads
  check_linear(rnd({512, 1024}), rnd({1000, 1024}), rnd({1000}));
}

TEST(GemmTiming, CountsEveryKernelCallOnlyWhileOn) {
  namespace kc = kernels::cpu;
  manual_seed(26);
  Tensor a = rnd({64, 32}), b = rnd({32, 48});
  kc::reset_gemm_timing();
  native::matmul(a, b);
  EXPECT_EQ(kc::gemm_timing().calls, 0) << "timing is off by default";
  kc::set_gemm_timing(true);
  native::matmul(a, b);                                        // BLAS
  native::matmul(a, rnd({32, 5}));                             // loom's skinny kernel
  native::matmul(rnd({4, 8, 32}, DType::bf16), rnd({32, 6}, DType::bf16));  // 16-bit panels
  native::matmul(rnd({3, 64, 32}), rnd({3, 32, 48}));          // one call for the batch
  kc::GemmTiming on = kc::gemm_timing();
  kc::set_gemm_timing(false);
  native::matmul(a, b);
  EXPECT_EQ(on.calls, 4);
  EXPECT_GT(on.seconds, 0.0);
  EXPECT_EQ(kc::gemm_timing().calls, 4) << "calls after set_gemm_timing(false) are not counted";
  kc::reset_gemm_timing();
  EXPECT_EQ(kc::gemm_timing().calls, 0);
  EXPECT_EQ(kc::gemm_timing().seconds, 0.0);
}

TEST(Linear, ErrorsNameShapes) {
  try {
    native::linear(zeros({4, 5}), zeros({6, 7}), Tensor());
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("linear: input [4, 5] and weight [6, 7] cannot be multiplied"));
  }
  try {
    native::linear(zeros({4, 5}), zeros({6, 5}), zeros({7}));
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("bias must have shape [6]"));
  }
  EXPECT_THROW(native::linear(zeros({4, 5}), zeros({6, 5}, DType::f64), Tensor()), ValueError);
}

}  // namespace
}  // namespace loom
