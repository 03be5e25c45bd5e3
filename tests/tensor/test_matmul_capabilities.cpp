// GEMMs under every CPU level this machine supports (kernels/cpu/capability.h): OpenBLAS below
// avx512, oneDNN's f32 GEMM from avx512, its bf16 matmul from avx512_bf16. Each is compared
// with an f64 reference over the values the operands hold, within the error bound of a GEMM
// accumulated in f32 plus the rounding of the output:
//   |C - ref| <= 2 (u_out + (k + 1) u_f32) sum_p |a_ip b_pj|
// (vdpbf16ps multiplies bf16 pairs exactly in f32 and accumulates in f32, so bf16 keeps the f32
// accumulation bound). Results must be reproducible bit for bit at a fixed thread count and
// agree across thread counts within the same bound (docs/design.md "Determinism").
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_onednn.h"
#include "kernels/threads_guard.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

Tensor rnd(const Shape& shape, DType dtype) {
  return native::to(randn(shape, DType::f64), Device::cpu(), dtype);
}

double unit_roundoff(DType t) {
  switch (t) {
    case DType::f32: return 6e-8;
    case DType::f16: return 4.9e-4;
    default: return 3.9e-3;
  }
}

// C = A @ B for 2-D or 3-D (batched) A and 2-D or 3-D B, in f64, with sum |a||b| per output.
void reference(const Tensor& a, const Tensor& b, std::vector<double>& value,
               std::vector<double>& abs_sum) {
  Tensor a3 = a.dim() == 2 ? native::unsqueeze(a, 0) : a;
  Tensor b3 = b.dim() == 2 ? native::unsqueeze(b, 0) : b;
  const int64_t batch = std::max(a3.sizes()[0], b3.sizes()[0]);
  const int64_t m = a3.sizes()[1], k = a3.sizes()[2], n = b3.sizes()[2];
  std::vector<double> av = native::contiguous(a3).to_double_vector();
  std::vector<double> bv = native::contiguous(b3).to_double_vector();
  value.assign(size_t(batch * m * n), 0.0);
  abs_sum.assign(value.size(), 0.0);
  for (int64_t bi = 0; bi < batch; ++bi) {
    const int64_t ao = (a3.sizes()[0] == 1 ? 0 : bi) * m * k;
    const int64_t bo = (b3.sizes()[0] == 1 ? 0 : bi) * k * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0, sa = 0;
        for (int64_t p = 0; p < k; ++p) {
          const double x = av[size_t(ao + i * k + p)] * bv[size_t(bo + p * n + j)];
          s += x;
          sa += std::abs(x);
        }
        value[size_t((bi * m + i) * n + j)] = s;
        abs_sum[size_t((bi * m + i) * n + j)] = sa;
      }
  }
}

void expect_within_bound(const Tensor& c, const std::vector<double>& value,
                         const std::vector<double>& abs_sum, int64_t k, const std::string& what) {
  std::vector<double> v = c.to_double_vector();
  ASSERT_EQ(v.size(), value.size()) << what;
  const double u = unit_roundoff(c.dtype());
  for (size_t i = 0; i < v.size(); ++i) {
    const double tol = 2 * (u + double(k + 1) * 6e-8) * abs_sum[i] + 1e-12;
    ASSERT_NEAR(v[i], value[i], tol) << what << ", element " << i;
  }
}

struct Case {
  const char* name;
  Shape a, b;
  bool ta, tb;  // operand stored transposed and passed as a transposed view
};

// Shapes that go through each path: large enough to be split over two threads, transposed
// operands (Linear's forward x @ w^T, its weight gradient dy^T @ x), batched, and ragged edges.
const Case kCases[] = {
    {"square", {256, 320}, {320, 288}, false, false},
    {"x @ w^T", {200, 384}, {384, 300}, false, true},
    {"dy^T @ x", {130, 512}, {512, 96}, true, false},
    {"both transposed", {72, 100}, {100, 136}, true, true},
    {"batched", {3, 40, 96}, {3, 96, 72}, false, false},
    {"batch times matrix", {4, 64, 48}, {48, 80}, false, false},
    {"wide C", {40, 128}, {128, 2100}, false, false},
    {"short K (dy @ w of a narrow layer)", {256, 12}, {12, 1024}, false, false},
};

Tensor operand(const Shape& shape, bool transposed, DType t) {
  if (!transposed) return rnd(shape, t);
  Shape s = shape;
  std::swap(s[s.size() - 1], s[s.size() - 2]);
  return native::transpose(rnd(s, t), -1, -2);
}

class GemmAtEveryLevel : public ::testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(GemmAtEveryLevel, MatchesTheReferenceAndIsReproducible) {
  const auto [level, dtype] = GetParam();
  if (level > max_cpu_level_index()) GTEST_SKIP() << "this machine (or LOOM_CPU_CAPABILITY) stops at "
                                                 << to_string(CpuLevel(max_cpu_level_index()));
  CpuLevelGuard cap{CpuLevel(level)};
  ThreadsGuard restore;
  manual_seed(21);
  for (const Case& c : kCases) {
    Tensor a = operand(c.a, c.ta, dtype), b = operand(c.b, c.tb, dtype);
    std::vector<double> value, abs_sum;
    reference(a, b, value, abs_sum);
    const std::string what = std::string(c.name) + " at " + to_string(CpuLevel(level));
    Tensor one;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      Tensor first = native::matmul(a, b), again = native::matmul(a, b);
      EXPECT_TRUE(first.equal(again)) << what << ", " << threads << " threads: not reproducible";
      expect_within_bound(first, value, abs_sum, c.a.back(), what);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Levels, GemmAtEveryLevel,
    ::testing::Combine(::testing::Range(0, int(CpuLevel::amx) + 1),
                       ::testing::Values(DType::f32, DType::bf16, DType::f16)),
    [](const auto& info) {
      return std::string(to_string(CpuLevel(std::get<0>(info.param)))) + "_" +
             std::string(dtype_name(std::get<1>(info.param)));
    });

// beta = 1 (Linear adds into C pre-filled with the bias) through every path.
TEST(GemmAtEveryLevel, LinearWithBiasAtEveryLevel) {
  manual_seed(22);
  for (int level = 0; level <= max_cpu_level_index(); ++level) {
    CpuLevelGuard cap{CpuLevel(level)};
    for (DType t : {DType::f32, DType::bf16}) {
      Tensor x = rnd({96, 160}, t), w = rnd({200, 160}, t), bias = rnd({200}, t);
      Tensor y = native::linear(x, w, bias);
      Tensor x64 = native::to(x, Device::cpu(), DType::f64);
      Tensor wt64 = native::transpose(native::to(w, Device::cpu(), DType::f64), 0, 1);
      Tensor ref = native::matmul(x64, wt64).add(native::to(bias, Device::cpu(), DType::f64));
      std::vector<double> v = y.to_double_vector(), r = ref.to_double_vector();
      const double tol = t == DType::f32 ? 2e-4 : 0.15;  // |y| ~ 13: bf16 spacing is 0.0625
      for (size_t i = 0; i < v.size(); ++i)
        ASSERT_NEAR(v[i], r[i], tol) << to_string(CpuLevel(level)) << " " << t << " " << i;
    }
  }
}

// A bias row handed to the kernel (GemmArgs::bias, what Linear does): C = A @ B + bias through
// every path at every level and dtype, batched, and large enough to be split over two threads
// (the split's blocks each add their columns of the bias), x @ w^T (oneDNN's matmul primitive
// from avx512) and A @ B as stored (dnnl_sgemm, which gets C filled with the bias).
TEST(GemmAtEveryLevel, BiasRowAddedByEveryKernel) {
  ThreadsGuard restore;
  manual_seed(25);
  struct BiasCase {
    Shape a, b;
    bool tb;
  };
  const BiasCase cases[] = {{{3, 40, 96}, {3, 96, 72}, false},
                            {{128, 256}, {256, 640}, true},
                            {{128, 256}, {256, 640}, false},
                            {{64, 48}, {48, 8}, true}};  // N = 8: loom's skinny kernel
  for (int level = 0; level <= max_cpu_level_index(); ++level) {
    CpuLevelGuard cap{CpuLevel(level)};
    for (DType t : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
      for (const BiasCase& bc : cases) {
        Tensor a = rnd(bc.a, t), b = operand(bc.b, bc.tb, t);
        const int64_t n = bc.b.back(), m = bc.a[bc.a.size() - 2], k = bc.a.back();
        const int64_t batch = bc.a.size() == 3 ? bc.a[0] : 1;
        Tensor bias = rnd({n}, t);
        std::vector<double> value, abs_sum;
        reference(a, b, value, abs_sum);
        std::vector<double> bv = bias.to_double_vector();
        for (size_t i = 0; i < value.size(); ++i) {
          value[i] += bv[i % size_t(n)];
          abs_sum[i] += std::abs(bv[i % size_t(n)]);
        }
        const std::string what = std::string(to_string(CpuLevel(level))) + " " +
                                 std::string(dtype_name(t)) + " " + shape_str(bc.a) + " @ " +
                                 shape_str(bc.b);
        for (int threads : {1, 2}) {
          set_num_threads(threads);
          Tensor c = full(batch == 1 ? Shape{m, n} : Shape{batch, m, n}, 1e4, t);
          const int64_t nd = a.dim();
          const int64_t batch_sizes[1] = {batch}, sa[1] = {m * k}, sb[1] = {k * n},
                        sc[1] = {m * n};
          kernels::cpu::GemmArgs g;
          g.m = m, g.n = n, g.k = k;
          g.a = a.raw_data_ptr(), g.a_rs = a.stride(nd - 2), g.a_cs = a.stride(nd - 1);
          g.b = b.raw_data_ptr(), g.b_rs = b.stride(nd - 2), g.b_cs = b.stride(nd - 1);
          g.c = c.raw_data_ptr(), g.c_rs = c.stride(nd - 2), g.c_cs = c.stride(nd - 1);
          g.bias = bias.raw_data_ptr();
          if (batch > 1) {
            g.batch_ndim = 1, g.batch_sizes = batch_sizes;
            g.a_batch_strides = sa, g.b_batch_strides = sb, g.c_batch_strides = sc;
          }
          kernels::cpu::gemm_table().get(DeviceType::cpu, t, "matmul")(g);
          expect_within_bound(c, value, abs_sum, k,
                              what + ", " + std::to_string(threads) + " threads");
        }
      }
    }
  }
}

// With AVX512-BF16, a bf16 GEMM runs in oneDNN's bf16 kernel: one primitive per shape, made
// once and then reused.
TEST(GemmAtEveryLevel, Bf16UsesOneDnnBf16KernelsWhenTheCpuHasThem) {
  if (max_cpu_level_index() < int(CpuLevel::avx512_bf16) || !kernels::cpu::onednn_available())
    GTEST_SKIP() << "no AVX512-BF16 here, or loom built without oneDNN";
  ThreadsGuard restore;
  set_num_threads(1);
  manual_seed(23);
  Tensor a = rnd({48, 80}, DType::bf16), b = rnd({80, 56}, DType::bf16);
  native::matmul(a, b);
  const int64_t made = kernels::cpu::onednn_primitives_created();
  native::matmul(a, b);
  EXPECT_EQ(kernels::cpu::onednn_primitives_created(), made);
  native::matmul(rnd({49, 80}, DType::bf16), b);
  EXPECT_EQ(kernels::cpu::onednn_primitives_created(), made + 1);
}

// From avx512, f32 x @ w^T with at most 512 rows (Linear's forward at a training batch),
// dy^T @ x with a short batch (its weight gradient, fewer outputs than inputs) and A @ B with
// K <= 64 (dy @ w of a narrow layer) run in oneDNN's
// matmul primitive (kernels/cpu/gemm.cpp): one per shape, made once and then reused; a tiny
// GEMM and a large square one stay in dnnl_sgemm. The values are checked by the cases above.
TEST(GemmAtEveryLevel, F32LinearShapesUseOneDnnMatmulPrimitives) {
  if (max_cpu_level_index() < int(CpuLevel::avx512) || !kernels::cpu::onednn_available())
    GTEST_SKIP() << "no AVX-512 here, or loom built without oneDNN";
  CpuLevelGuard cap{CpuLevel::avx512};
  ThreadsGuard restore;
  set_num_threads(1);
  manual_seed(24);
  Tensor x = rnd({64, 512}, DType::f32), w = rnd({256, 512}, DType::f32);
  Tensor wt = native::transpose(w, 0, 1);
  native::matmul(x, wt);
  const int64_t made = kernels::cpu::onednn_f32_primitives_created();
  native::matmul(x, wt);
  EXPECT_EQ(kernels::cpu::onednn_f32_primitives_created(), made);
  Tensor dy = rnd({512, 64}, DType::f32), xin = rnd({512, 48}, DType::f32);
  native::matmul(native::transpose(dy, 0, 1), xin);  // 64 x 48 x 512: under 2M multiply-adds
  EXPECT_EQ(kernels::cpu::onednn_f32_primitives_created(), made);
  Tensor dy2 = rnd({256, 512}, DType::f32), x2 = rnd({256, 384}, DType::f32);
  native::matmul(native::transpose(dy2, 0, 1), x2);  // 512 x 384 x 256
  EXPECT_EQ(kernels::cpu::onednn_f32_primitives_created(), made + 1);
  native::matmul(rnd({256, 12}, DType::f32), rnd({12, 1024}, DType::f32));  // K = 12
  EXPECT_EQ(kernels::cpu::onednn_f32_primitives_created(), made + 2);
  Tensor sq = rnd({1024, 1024}, DType::f32);
  native::matmul(sq, native::transpose(sq, 0, 1));  // M = 1024: dnnl_sgemm
  EXPECT_EQ(kernels::cpu::onednn_f32_primitives_created(), made + 2);
}

}  // namespace
}  // namespace loom
