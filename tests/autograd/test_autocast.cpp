// Autocast casts f32 matmul inputs to the low dtype but leaves f64 alone, as PyTorch does.
#include <gtest/gtest.h>

#include "loom.h"

using namespace loom;

TEST(Autocast, LeavesF64MatmulInF64AndCastsF32) {
  Tensor a64 = randn({4, 3}, DType::f64), b64 = randn({3, 2}, DType::f64);
  Tensor a32 = a64.to(DType::f32), b32 = b64.to(DType::f32);
  AutocastGuard on(true, DType::bf16);
  EXPECT_EQ(matmul(a64, b64).dtype(), DType::f64);
  EXPECT_EQ(matmul(a32, b32).dtype(), DType::bf16);
  EXPECT_EQ(linear(a32, b32.t()).dtype(), DType::bf16);
}
