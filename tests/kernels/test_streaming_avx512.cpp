// The AVX-512 build of the f32 streaming kernels (kernels/cpu/streaming_avx512.h) gives the
// AVX2 build's bits: add, sub, mul and div on contiguous and broadcast operands, and the
// pairwise sum of f32 (and of bf16 through its f32 blocks), over lengths around the 32-lane
// and 2048-value leaf boundaries, with infinities, NaNs, signed zeros and subnormals among the
// values. The sums are also checked against a double reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/capability.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

bool avx512_available() { return int(CpuLevel::avx512) <= max_cpu_level_index(); }

// randn values with specials sprinkled in (every 97th value) when `specials`.
Tensor values(int64_t n, bool specials) {
  Tensor t = randn({n});
  if (!specials) return t;
  float* p = t.data_ptr<float>();
  const float special[] = {std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(), -0.0f, 0.0f,
                           std::numeric_limits<float>::denorm_min(), 1e-40f, 3e38f};
  for (int64_t i = 0; i < n; i += 97) p[i] = special[(i / 97) % 8];
  return t;
}

std::vector<uint32_t> bits(const Tensor& t) {
  EXPECT_TRUE(t.is_contiguous());
  std::vector<uint32_t> out(size_t(t.numel()));
  std::memcpy(out.data(), t.data_ptr<float>(), out.size() * 4);
  return out;
}

template <class Fn>
std::vector<uint32_t> at_level(CpuLevel level, Fn fn) {
  CpuLevelGuard cap{level};
  return bits(fn());
}

const std::vector<int64_t> kLengths = {1, 7, 31, 32, 33, 64, 100, 2047, 2048, 2049, 4096 + 5, 100003};

TEST(StreamingAvx512, ArithmeticGivesTheAvx2BitsForEveryBroadcastPattern) {
  if (!avx512_available()) GTEST_SKIP() << "this CPU has no AVX-512: only the AVX2 build runs here";
  manual_seed(5);
  const std::pair<native::BinaryOp, const char*> ops[] = {{native::BinaryOp::add, "add"},
                                                          {native::BinaryOp::sub, "sub"},
                                                          {native::BinaryOp::mul, "mul"},
                                                          {native::BinaryOp::div, "div"}};
  for (int64_t n : kLengths) {
    const Tensor a = values(n, true), b = values(n, true);
    const Tensor s = native::wrap_scalar(0.37, a);
    for (const auto& [op, name] : ops) {
      const std::pair<Tensor, Tensor> cases[] = {{a, b}, {a, s}, {s, b}};
      for (int c = 0; c < 3; ++c) {
        const auto& [x, y] = cases[c];
        auto run = [&, op = op] { return native::binary(op, x, y); };
        const std::vector<uint32_t> avx2 = at_level(CpuLevel::avx2, run);
        const std::vector<uint32_t> avx512 = at_level(CpuLevel::avx512, run);
        ASSERT_EQ(avx2.size(), size_t(n));
        EXPECT_TRUE(avx2 == avx512) << name << " n " << n << " pattern " << c
                                    << ": the AVX-512 build differs from the AVX2 build";
      }
    }
  }
}

TEST(StreamingAvx512, ArithmeticIsTheIeeeResultOfEachElement) {
  // The dispatched op against the scalar expression, element by element (NaN compared as NaN).
  manual_seed(6);
  for (CpuLevel level : {CpuLevel::avx2, CpuLevel::avx512}) {
    if (int(level) > max_cpu_level_index()) continue;
    CpuLevelGuard cap{level};
    const Tensor a = values(4101, true), b = values(4101, true);
    const Tensor q = native::binary(native::BinaryOp::div, a, b);
    const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>(), *pq = q.data_ptr<float>();
    for (int64_t i = 0; i < a.numel(); ++i) {
      const float want = pa[i] / pb[i];
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(pq[i])) << "div at " << i << " under " << to_string(level);
      } else {
        EXPECT_EQ(std::memcmp(&want, &pq[i], 4), 0)
            << "div at " << i << " under " << to_string(level) << ": " << pq[i] << " != " << want;
      }
    }
  }
}

TEST(StreamingAvx512, SumGivesTheAvx2BitsAndStaysNearTheExactSum) {
  if (!avx512_available()) GTEST_SKIP() << "this CPU has no AVX-512: only the AVX2 build runs here";
  manual_seed(7);
  for (int64_t n : kLengths) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Tensor x = native::to(values(n, false), Device::cpu(), dtype);
      auto run = [&] { return native::sum(x, {0}, false, DType::f32); };
      const std::vector<uint32_t> avx2 = at_level(CpuLevel::avx2, run);
      const std::vector<uint32_t> avx512 = at_level(CpuLevel::avx512, run);
      EXPECT_TRUE(avx2 == avx512) << "sum of " << n << " " << dtype
                                  << " values: the AVX-512 build differs from the AVX2 build";
      double exact = 0, magnitude = 0;
      for (double v : x.to_double_vector()) exact += v, magnitude += std::fabs(v);
      float got;
      std::memcpy(&got, avx512.data(), 4);
      EXPECT_NEAR(got, exact, 1e-6 * magnitude + 1e-6) << "sum of " << n << " " << dtype << " values";
    }
  }
}

}  // namespace
}  // namespace loom
