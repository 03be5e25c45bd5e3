// softmax / log_softmax in f32 at the avx2 and avx512 levels (kernels/cpu/softmax_avx512.h)
// against an f64 evaluation of the same rows: each level within 2e-6 relative (softmax) or
// 2e-6 (|log_softmax| + 1) absolute, and each reproducible and independent of the thread
// count. Rows along the last dim (in place) and along a middle dim (gathered), of lengths
// around the 1024-value block of the exp sums.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/threads_guard.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

// softmax or log_softmax along `dim` of a contiguous 3-D f32 tensor, in f64.
std::vector<double> reference(const Tensor& x, int64_t dim, bool log) {
  const Shape s = x.sizes();
  std::vector<double> v = x.to_double_vector(), out(v.size());
  const int64_t O = dim == 2 ? s[0] * s[1] : s[0], R = s[dim], I = dim == 2 ? 1 : s[2];
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      auto at = [&](int64_t r) { return size_t((o * R + r) * I + i); };
      double m = -INFINITY, sum = 0;
      for (int64_t r = 0; r < R; ++r) m = std::max(m, v[at(r)]);
      for (int64_t r = 0; r < R; ++r) sum += std::exp(v[at(r)] - m);
      for (int64_t r = 0; r < R; ++r)
        out[at(r)] = log ? v[at(r)] - m - std::log(sum) : std::exp(v[at(r)] - m) / sum;
    }
  return out;
}

TEST(SoftmaxAvx512, EveryLevelMatchesTheReferenceAndIgnoresTheThreadCount) {
  ThreadsGuard restore;
  manual_seed(31);
  const std::vector<std::pair<Shape, int64_t>> cases = {
      {{4, 8, 1000}, 2}, {{2, 3, 2500}, 2}, {{3, 300, 20}, 1}, {{64, 2, 77}, 2}};
  for (const auto& [shape, dim] : cases) {
    Tensor r = randn(shape);
    Tensor x = native::binary(native::BinaryOp::mul, r, native::wrap_scalar(4.0, r));  // +-16
    for (bool log : {false, true}) {
      const std::vector<double> ref = reference(x, dim, log);
      for (CpuLevel level : {CpuLevel::avx2, CpuLevel::avx512}) {
        if (int(level) > max_cpu_level_index()) continue;
        CpuLevelGuard cap{level};
        const std::string what = std::string(log ? "log_softmax " : "softmax ") +
                                 shape_str(shape) + " dim " + std::to_string(dim) + " at " +
                                 to_string(level);
        set_num_threads(1);
        Tensor one = log ? native::log_softmax(x, dim) : native::softmax(x, dim);
        set_num_threads(2);
        Tensor two = log ? native::log_softmax(x, dim) : native::softmax(x, dim);
        EXPECT_TRUE(one.equal(two)) << what << ": depends on the thread count";
        const float* p = one.data_ptr<float>();
        for (size_t i = 0; i < ref.size(); ++i) {
          const double tol = log ? 2e-6 * (std::abs(ref[i]) + 1) : 2e-6 * ref[i] + 1e-30;
          ASSERT_NEAR(p[i], ref[i], tol) << what << ", element " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace loom
