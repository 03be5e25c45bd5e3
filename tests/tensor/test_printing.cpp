// Printing (Tensor::str, operator<<): values with shape, dtype and device, nested rows, long
// dims elided at both ends, meta and unmaterialised tensors shown without reading bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "tensor/factories.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string printed(const Tensor& t) {
  std::ostringstream os;
  os << t;
  EXPECT_EQ(os.str(), t.str());
  return os.str();
}

TEST(Printing, OneDimensional) {
  EXPECT_EQ(printed(tensor({1.0, 2.5, -3.0})), "Tensor([1, 2.5, -3], shape=[3], dtype=f32, device=cpu)");
  EXPECT_EQ(printed(tensor({1, 2})), "Tensor([1, 2], shape=[2], dtype=i64, device=cpu)");
  EXPECT_EQ(printed(tensor({3.14159265}, DType::f64)),
            "Tensor([3.142], shape=[1], dtype=f64, device=cpu)");
  EXPECT_EQ(printed(from_vector(std::vector<bool>{true, false})),
            "Tensor([1, 0], shape=[2], dtype=bool, device=cpu)");
  EXPECT_EQ(printed(tensor({NAN, INFINITY, -INFINITY})),
            "Tensor([nan, inf, -inf], shape=[3], dtype=f32, device=cpu)");
}

TEST(Printing, ScalarsEmptyAndUndefined) {
  EXPECT_EQ(printed(scalar_tensor(3.5)), "Tensor(3.5, shape=[], dtype=f32, device=cpu)");
  EXPECT_EQ(printed(zeros({0})), "Tensor([], shape=[0], dtype=f32, device=cpu)");
  EXPECT_EQ(printed(Tensor()), "Tensor(undefined)");
}

TEST(Printing, NestedRowsAlign) {
  EXPECT_EQ(printed(arange(6).view({2, 3})),
            "Tensor([[0, 1, 2],\n"
            "        [3, 4, 5]], shape=[2, 3], dtype=i64, device=cpu)");
  EXPECT_EQ(printed(arange(8).view({2, 2, 2})),
            "Tensor([[[0, 1],\n"
            "         [2, 3]],\n"
            "        [[4, 5],\n"
            "         [6, 7]]], shape=[2, 2, 2], dtype=i64, device=cpu)");
  // A view prints its own logical order.
  EXPECT_EQ(printed(arange(6).view({2, 3}).t()),
            "Tensor([[0, 3],\n"
            "        [1, 4],\n"
            "        [2, 5]], shape=[3, 2], dtype=i64, device=cpu)");
}

TEST(Printing, LongDimsAreElided) {
  EXPECT_EQ(printed(arange(100)),
            "Tensor([0, 1, 2, ..., 97, 98, 99], shape=[100], dtype=i64, device=cpu)");
  EXPECT_EQ(printed(arange(7)), "Tensor([0, 1, 2, 3, 4, 5, 6], shape=[7], dtype=i64, device=cpu)");
  EXPECT_EQ(printed(arange(8)), "Tensor([0, 1, 2, ..., 5, 6, 7], shape=[8], dtype=i64, device=cpu)");
  EXPECT_EQ(printed(arange(20).view({10, 2})),
            "Tensor([[0, 1],\n"
            "        [2, 3],\n"
            "        [4, 5],\n"
            "        ...,\n"
            "        [14, 15],\n"
            "        [16, 17],\n"
            "        [18, 19]], shape=[10, 2], dtype=i64, device=cpu)");
  std::string big = printed(arange(1000 * 1000).view({1000, 1000}));
  EXPECT_THAT(big, HasSubstr("[0, 1, 2, ..., 997, 998, 999]"));
  EXPECT_THAT(big, HasSubstr("[999000, 999001, 999002, ..., 999997, 999998, 999999]"));
  EXPECT_THAT(big, Not(HasSubstr("500500")));
  EXPECT_LT(big.size(), 600u);
}

TEST(Printing, MetaUnmaterialisedAndRequiresGrad) {
  EXPECT_EQ(printed(empty({1000000000}, DType::bf16, Device::meta())),
            "Tensor(<meta>, shape=[1000000000], dtype=bf16, device=meta)");
  Tensor lazy = empty({4});
  EXPECT_EQ(printed(lazy), "Tensor(<not materialised>, shape=[4], dtype=f32, device=cpu)");
  EXPECT_FALSE(lazy.is_materialized());  // printing did not allocate it
  Tensor w = ones({2});
  w.requires_grad_();
  EXPECT_EQ(printed(w), "Tensor([1, 1], shape=[2], dtype=f32, device=cpu, requires_grad)");
  Tensor mw = empty({3}, DType::f32, Device::meta());
  mw.requires_grad_();
  EXPECT_EQ(printed(mw), "Tensor(<meta>, shape=[3], dtype=f32, device=meta, requires_grad)");
}

TEST(Printing, SixteenBitValuesPrintTheirStoredValue) {
  EXPECT_EQ(printed(tensor({0.1, 3.3}, DType::f16)),
            "Tensor([0.09998, 3.301], shape=[2], dtype=f16, device=cpu)");
}

}  // namespace
}  // namespace loom
