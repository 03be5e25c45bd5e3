// Gradients of every differentiable public op against central finite differences in f64
// (tests/autograd/gradcheck.h), with contiguous, non-contiguous (transposed, strided) and
// broadcast inputs; plus one hand-derived case per op family with the math in a comment.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/grad_mode.h"
#include "nn/nn.h"
#include "tensor/defaults.h"
#include "tensor/factories.h"
#include "tensor/ops.h"
#include "tests/autograd/gradcheck.h"

namespace loom {
namespace {

using testing_util::gradcheck;
using testing_util::leaf;
using testing_util::leaf_strided;
using testing_util::leaf_transposed;
using In = const TensorList&;

Tensor bool_mask(const Shape& shape, uint64_t seed) {
  Tensor u = native::empty(shape, DType::f64, Device::cpu());
  Generator g(seed);
  fill_uniform(u, 0.0, 1.0, g);
  return u.gt(0.5);
}

// ---------------------------------------------------------------- binary elementwise

TEST(GradcheckElementwise, AddSubWithAlphaAndBroadcast) {
  EXPECT_TRUE(gradcheck([](In x) { return add(x[0], x[1]); }, {leaf({3, 4}, 1), leaf({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return add(x[0], x[1], 2.5); },
                        {leaf({3, 4}, 1), leaf({4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return sub(x[0], x[1]); }, {leaf({3, 1}, 3), leaf({1, 4}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return sub(x[0], x[1], -0.5); },
                        {leaf_transposed({3, 4}, 5), leaf_strided({3, 4}, 6)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0] + x[1] - x[0] * 3.0; },
                        {leaf({2, 3, 4}, 7), leaf({}, 8)}));
}

TEST(GradcheckElementwise, MulDivBroadcastAndNonContiguous) {
  EXPECT_TRUE(gradcheck([](In x) { return mul(x[0], x[1]); }, {leaf({3, 4}, 1), leaf({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return mul(x[0], x[1]); },
                        {leaf_transposed({3, 4}, 3), leaf({2, 1, 4}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return div(x[0], x[1]); },
                        {leaf({3, 4}, 5), leaf({3, 4}, 6, 0.5, 2.0)}));
  EXPECT_TRUE(gradcheck([](In x) { return div(x[0], x[1]); },
                        {leaf_strided({3, 4}, 7), leaf({4}, 8, 0.5, 2.0)}));
  // Scalar on the left: 2 / x.
  EXPECT_TRUE(gradcheck([](In x) { return 2.0 / x[0]; }, {leaf({5}, 9, 0.5, 2.0)}));
  // The same tensor on both sides: d(x*x)/dx = 2x flows through both edges.
  EXPECT_TRUE(gradcheck([](In x) { return mul(x[0], x[0]); }, {leaf({4}, 10)}));
}

TEST(GradcheckElementwise, PowScalarAndTensorExponent) {
  EXPECT_TRUE(gradcheck([](In x) { return pow(x[0], 3.0); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return pow(x[0], 2.5); }, {leaf({3, 4}, 2, 0.5, 2.0)}));
  EXPECT_TRUE(gradcheck([](In x) { return pow(x[0], -1.5); }, {leaf_transposed({3, 4}, 3, 0.5, 2.0)}));
  EXPECT_TRUE(gradcheck([](In x) { return pow(x[0], x[1]); },
                        {leaf({3, 4}, 4, 0.5, 2.0), leaf({3, 4}, 5)}));
  EXPECT_TRUE(gradcheck([](In x) { return pow(x[0], x[1]); },
                        {leaf({3, 1}, 6, 0.5, 2.0), leaf({4}, 7)}));
}

TEST(GradcheckElementwise, MaximumMinimumBroadcast) {
  EXPECT_TRUE(gradcheck([](In x) { return maximum(x[0], x[1]); }, {leaf({3, 4}, 1), leaf({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return minimum(x[0], x[1]); }, {leaf({3, 4}, 3), leaf({4}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].maximum(x[1]); },
                        {leaf_transposed({3, 4}, 5), leaf({3, 1}, 6)}));
}

TEST(GradcheckElementwise, MaximumTieSplitsTheGradient) {
  // At a tie PyTorch sends half the gradient to each side (finite differences are not
  // defined there, so this is checked by hand).
  Tensor a = tensor({1.0, 2.0, 3.0}, DType::f64).requires_grad_();
  Tensor b = tensor({1.0, 5.0, 0.0}, DType::f64).requires_grad_();
  maximum(a, b).sum().backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0.5, 0.0, 1.0}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0.5, 1.0, 0.0}));
}

// ---------------------------------------------------------------- unary elementwise

TEST(GradcheckElementwise, UnaryOps) {
  auto check = [](const char* name, Tensor (*f)(const Tensor&), double lo, double hi) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(gradcheck([f](In x) { return f(x[0]); }, {leaf({3, 4}, 11, lo, hi)}));
    EXPECT_TRUE(gradcheck([f](In x) { return f(x[0]); }, {leaf_transposed({3, 4}, 12, lo, hi)}));
    EXPECT_TRUE(gradcheck([f](In x) { return f(x[0]); }, {leaf_strided({3, 4}, 13, lo, hi)}));
  };
  check("neg", neg, -2, 2);
  check("exp", exp, -2, 2);
  check("log", log, 0.2, 3);
  check("sqrt", sqrt, 0.2, 3);
  check("rsqrt", rsqrt, 0.2, 3);
  check("abs", abs, -2, 2);
  check("tanh", tanh, -2, 2);
  check("sigmoid", sigmoid, -3, 3);
  check("relu", relu, -2, 2);
  check("gelu_erf", [](const Tensor& x) { return gelu(x, false); }, -3, 3);
  check("gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, -3, 3);
  check("square", [](const Tensor& x) { return x.square(); }, -2, 2);
  check("operator-", [](const Tensor& x) { return -x; }, -2, 2);
}

TEST(GradcheckElementwise, Clamp) {
  EXPECT_TRUE(gradcheck([](In x) { return clamp(x[0], -0.5, 0.5); }, {leaf({4, 5}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return clamp(x[0], -0.3, std::nullopt); },
                        {leaf_transposed({4, 5}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].clamp(std::nullopt, 0.2); }, {leaf_strided({4, 5}, 3)}));
}

TEST(GradcheckElementwise, WhereAndMaskedFill) {
  Tensor c = bool_mask({3, 4}, 99);
  EXPECT_TRUE(gradcheck([c](In x) { return where(c, x[0], x[1]); }, {leaf({3, 4}, 1), leaf({3, 4}, 2)}));
  // Broadcast branches: a (4) and b (3, 1) against a (3, 4) condition.
  EXPECT_TRUE(gradcheck([c](In x) { return where(c, x[0], x[1]); }, {leaf({4}, 3), leaf({3, 1}, 4)}));
  EXPECT_TRUE(gradcheck([c](In x) { return where(c, x[0], x[1]); },
                        {leaf_transposed({3, 4}, 5), leaf_strided({3, 4}, 6)}));
  EXPECT_TRUE(gradcheck([c](In x) { return masked_fill(x[0], c, 7.0); }, {leaf({3, 4}, 7)}));
  Tensor row = bool_mask({4}, 98);  // broadcast mask
  EXPECT_TRUE(gradcheck([row](In x) { return x[0].masked_fill(row, -1.0); },
                        {leaf_transposed({3, 4}, 8)}));
}

TEST(GradcheckElementwise, HandDerivedSquare) {
  // d/dx sum(x^2) = 2x.
  Tensor x = tensor({-1.5, 0.0, 2.0, 3.0}, DType::f64).requires_grad_();
  pow(x, 2.0).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{-3.0, 0.0, 4.0, 6.0}));
  // d/da sum(a * b) = b, d/db = a; d/da sum(a / b) = 1 / b.
  Tensor a = tensor({1.0, 2.0}, DType::f64).requires_grad_();
  Tensor b = tensor({4.0, -8.0}, DType::f64).requires_grad_();
  (a * b + a / b).sum().backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{4.25, -8.125}));
  // d/db (a*b + a/b) = a - a / b^2 = 1 - 1/16, 2 - 2/64.
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0.9375, 1.96875}));
}

// relu keeps only its output for backward (as PyTorch): its input may change in place
// afterwards, and the gradient is still the mask of the output, NaN and -0 included.
TEST(GradcheckElementwise, ReluBackwardNeedsOnlyItsOutput) {
  Tensor x = tensor({-0.0, -1.0, 2.0, std::nan(""), 3.0}, DType::f64).requires_grad_();
  Tensor h = x * 2.0;
  Tensor y = relu(h);
  {
    NoGradGuard no_grad;
    h.fill_(-5.0);  // relu saved nothing of h: backward does not see this
  }
  y.sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 2, 0, 2}));
  EXPECT_EQ(y.to_vector<double>()[2], 4.0);
}

TEST(GradcheckElementwise, ConventionsAtNonDifferentiablePoints) {
  // PyTorch's choices where the derivative is undefined: abs'(0) = 0, relu'(0) = 0,
  // clamp passes the gradient at its bounds, d(x^0)/dx = 0 (also at x = 0), and
  // d(a^b)/db = 0 where a = 0 and b >= 0 (instead of 0 * log 0 = NaN).
  Tensor x = tensor({0.0, -1.0, 1.0}, DType::f64).requires_grad_();
  abs(x).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, -1, 1}));
  x.set_grad(Tensor());
  relu(x).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 1}));
  x.set_grad(Tensor());
  clamp(x, -1.0, 1.0).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 1, 1}));
  x.set_grad(Tensor());
  pow(x, 0.0).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 0}));
  x.set_grad(Tensor());
  pow(x, 1.0).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 1, 1}));
  Tensor a = tensor({0.0, 0.0, 2.0}, DType::f64).requires_grad_();
  Tensor b = tensor({0.0, 2.0, 3.0}, DType::f64).requires_grad_();
  pow(a, b).sum().backward();
  // d/da: b a^(b-1) = (0 * 0^-1 -> 0 as PyTorch, 2 * 0 = 0, 3 * 4 = 12).
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0, 0, 12}));
  std::vector<double> gb = b.grad().to_vector<double>();
  EXPECT_EQ(gb[0], 0.0);
  EXPECT_EQ(gb[1], 0.0);
  EXPECT_NEAR(gb[2], 8.0 * std::log(2.0), 1e-12);
}

// ---------------------------------------------------------------- linear algebra

TEST(GradcheckLinalg, MatmulEveryRankCombination) {
  auto mm = [](In x) { return matmul(x[0], x[1]); };
  EXPECT_TRUE(gradcheck(mm, {leaf({5}, 1), leaf({5}, 2)}));                        // 1-D . 1-D
  EXPECT_TRUE(gradcheck(mm, {leaf({3, 4}, 3), leaf({4, 5}, 4)}));                  // 2-D
  EXPECT_TRUE(gradcheck(mm, {leaf_transposed({3, 4}, 5), leaf_transposed({4, 5}, 6)}));
  EXPECT_TRUE(gradcheck(mm, {leaf({2, 1, 3, 4}, 7), leaf({3, 4, 2}, 8)}));         // batch bcast
  EXPECT_TRUE(gradcheck(mm, {leaf({2, 3, 4}, 9), leaf({4, 2}, 10)}));              // N-D . 2-D
  EXPECT_TRUE(gradcheck(mm, {leaf({4}, 11), leaf({2, 4, 3}, 12)}));                // 1-D . N-D
  EXPECT_TRUE(gradcheck(mm, {leaf({4}, 13), leaf({4, 3}, 14)}));                   // 1-D . 2-D
  EXPECT_TRUE(gradcheck(mm, {leaf({2, 3, 4}, 15), leaf({4}, 16)}));                // N-D . 1-D
  EXPECT_TRUE(gradcheck(mm, {leaf_strided({3, 4}, 17), leaf({4}, 18)}));           // 2-D . 1-D
}

TEST(GradcheckLinalg, Linear) {
  EXPECT_TRUE(gradcheck([](In x) { return linear(x[0], x[1], x[2]); },
                        {leaf({3, 4}, 1), leaf({5, 4}, 2), leaf({5}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return linear(x[0], x[1]); }, {leaf({3, 4}, 4), leaf({5, 4}, 5)}));
  EXPECT_TRUE(gradcheck([](In x) { return linear(x[0], x[1], x[2]); },
                        {leaf({2, 3, 4}, 6), leaf_transposed({5, 4}, 7), leaf({5}, 8)}));
  EXPECT_TRUE(gradcheck([](In x) { return linear(x[0], x[1], x[2]); },
                        {leaf_transposed({3, 4}, 9), leaf({5, 4}, 10), leaf_strided({5}, 11)}));
}

TEST(GradcheckLinalg, LinearWithFrozenInputOrWeight) {
  // Only some inputs require grad: the others are captured constants.
  Tensor x = leaf({2, 3, 4}, 1).detach(), w = leaf({5, 4}, 2).detach();
  EXPECT_TRUE(gradcheck([x](In p) { return linear(x, p[0], p[1]); }, {leaf({5, 4}, 3), leaf({5}, 4)}));
  EXPECT_TRUE(gradcheck([w](In p) { return linear(p[0], w); }, {leaf({2, 3, 4}, 5)}));
}

TEST(GradcheckLinalg, HandDerivedMatmul) {
  // L = sum(A B) = sum_ij sum_k A_ik B_kj  =>  dL/dA_ik = sum_j B_kj (row sums of B),
  //                                            dL/dB_kj = sum_i A_ik (column sums of A).
  Tensor a = from_vector<double>({1, 2, 3, 4, 5, 6}, Shape{2, 3}).requires_grad_();
  Tensor b = from_vector<double>({1, -1, 2, 0, 3, 1}, Shape{3, 2}).requires_grad_();
  matmul(a, b).sum().backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0, 2, 4, 0, 2, 4}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{5, 5, 7, 7, 9, 9}));
}

// ---------------------------------------------------------------- reductions

TEST(GradcheckReduce, SumAndMean) {
  EXPECT_TRUE(gradcheck([](In x) { return x[0].sum(); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].sum({1}); }, {leaf_transposed({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].sum({0, 2}, true); }, {leaf({2, 3, 4}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].sum({-1}); }, {leaf_strided({2, 3, 4}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].mean(); }, {leaf({3, 4}, 5)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].mean({0}); }, {leaf_transposed({3, 4}, 6)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].mean({1, 2}, true); }, {leaf({2, 3, 4}, 7)}));
  EXPECT_TRUE(gradcheck([](In x) { return mean(x[0], {-2}); }, {leaf({2, 3, 4}, 8)}));
}

TEST(GradcheckReduce, Var) {
  EXPECT_TRUE(gradcheck([](In x) { return x[0].var({1}); }, {leaf({3, 5}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].var({0}, 0); }, {leaf_transposed({3, 5}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].var({0, 2}, 1, true); }, {leaf({3, 2, 4}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return var(x[0], {}); }, {leaf({3, 4}, 4)}));
}

TEST(GradcheckReduce, MaxMinAmax) {
  EXPECT_TRUE(gradcheck([](In x) { return x[0].max(); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].min(); }, {leaf_transposed({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return std::get<0>(x[0].max(1)); }, {leaf({3, 4}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return std::get<0>(x[0].max(0, true)); },
                        {leaf_transposed({3, 4}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return std::get<0>(x[0].min(-1)); }, {leaf_strided({2, 3, 4}, 5)}));
  EXPECT_TRUE(gradcheck([](In x) { return amax(x[0], {1}); }, {leaf({3, 4}, 6)}));
  EXPECT_TRUE(gradcheck([](In x) { return amax(x[0], {0, 2}, true); }, {leaf({2, 3, 4}, 7)}));
}

TEST(GradcheckReduce, MaxTiesAndIndices) {
  // amax shares the gradient evenly among tied maxima; max(dim) sends it to the returned index.
  Tensor x = tensor({1.0, 3.0, 3.0, 0.0}, DType::f64).requires_grad_();
  x.max().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0.5, 0.5, 0}));
  Tensor y = tensor({1.0, 3.0, 3.0, 0.0}, DType::f64).requires_grad_();
  auto [v, i] = y.max(0);
  EXPECT_EQ(i.item<int64_t>(), 1);
  v.backward();
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{0, 1, 0, 0}));
}

TEST(GradcheckReduce, HandDerivedMean) {
  // d/dx_i mean(x) = 1/N; d/dx_i var(x) (correction 1) = 2 (x_i - mean) / (N - 1).
  Tensor x = tensor({1.0, 2.0, 3.0, 6.0}, DType::f64).requires_grad_();
  x.mean().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>(4, 0.25)));
  Tensor y = tensor({1.0, 2.0, 3.0, 6.0}, DType::f64).requires_grad_();
  var(y, {}).backward();  // mean 3: 2 * (-2, -1, 0, 3) / 3
  std::vector<double> g = y.grad().to_vector<double>(), want{-4.0 / 3, -2.0 / 3, 0.0, 2.0};
  for (size_t k = 0; k < 4; ++k) EXPECT_NEAR(g[k], want[k], 1e-15);
}

// ---------------------------------------------------------------- softmax, losses, norms

TEST(GradcheckSoftmax, SoftmaxAndLogSoftmaxEveryDim) {
  for (int64_t d : {0, 1, -1}) {
    SCOPED_TRACE(d);
    EXPECT_TRUE(gradcheck([d](In x) { return x[0].softmax(d); }, {leaf({3, 5}, 1, -2, 2)}));
    EXPECT_TRUE(gradcheck([d](In x) { return softmax(x[0], d); }, {leaf_transposed({3, 5}, 2, -2, 2)}));
    EXPECT_TRUE(gradcheck([d](In x) { return x[0].log_softmax(d); }, {leaf({3, 5}, 3, -2, 2)}));
    EXPECT_TRUE(gradcheck([d](In x) { return log_softmax(x[0], d); }, {leaf_strided({3, 5}, 4, -2, 2)}));
  }
  EXPECT_TRUE(gradcheck([](In x) { return softmax(x[0], 1); }, {leaf({2, 3, 4}, 5, -2, 2)}));
}

TEST(GradcheckSoftmax, HandDerivedSoftmax) {
  // s = softmax(x): ds_i/dx_j = s_i (delta_ij - s_j). With L = s_0:
  // dL/dx = s_0 * (e_0 - s).  For x = (0, log 3): s = (1/4, 3/4), dL/dx = (3/16, -3/16).
  Tensor x = tensor({0.0, std::log(3.0)}, DType::f64).requires_grad_();
  x.softmax(0).select(0, 0).backward();
  std::vector<double> g = x.grad().to_vector<double>();
  EXPECT_NEAR(g[0], 3.0 / 16, 1e-15);
  EXPECT_NEAR(g[1], -3.0 / 16, 1e-15);
}

TEST(GradcheckLoss, CrossEntropyReductionsIgnoreIndexSmoothing) {
  Tensor t = tensor({2, 0, 4, 1}, DType::i64);
  Tensor t_ign = tensor({2, -100, 4, 1}, DType::i64);
  Tensor t_ign7 = tensor({7, 0, 7, 3}, DType::i64);
  for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
    SCOPED_TRACE(int(r));
    EXPECT_TRUE(gradcheck([&](In x) { return loom::cross_entropy(x[0], t, -100, 0.0, r); },
                          {leaf({4, 5}, 1, -2, 2)}));
    EXPECT_TRUE(gradcheck([&](In x) { return loom::cross_entropy(x[0], t_ign, -100, 0.0, r); },
                          {leaf_transposed({4, 5}, 2, -2, 2)}));
    EXPECT_TRUE(gradcheck([&](In x) { return loom::cross_entropy(x[0], t, -100, 0.1, r); },
                          {leaf({4, 5}, 3, -2, 2)}));
    EXPECT_TRUE(gradcheck([&](In x) { return loom::cross_entropy(x[0], t_ign7, 7, 0.2, r); },
                          {leaf_strided({4, 5}, 4, -2, 2)}));
  }
  // (N, C, d) logits with (N, d) targets, and unbatched (C) logits with a 0-dim target.
  Tensor t3 = from_vector<int64_t>({0, 2, 1, 1, 2, 0}, Shape{2, 3});
  EXPECT_TRUE(gradcheck([&](In x) { return loom::cross_entropy(x[0], t3, -100, 0.1); },
                        {leaf({2, 3, 3}, 5, -2, 2)}));
  Tensor t0 = from_vector<int64_t>({2}, Shape{});
  EXPECT_TRUE(gradcheck([&](In x) { return loom::cross_entropy(x[0], t0); }, {leaf({4}, 6, -2, 2)}));
}

TEST(GradcheckLoss, HandDerivedCrossEntropy) {
  // L = mean_n (-log softmax(x_n)[t_n])  =>  dL/dx_n = (softmax(x_n) - onehot(t_n)) / N.
  // Uniform logits over C = 4: softmax = 1/4, so the row gradient is (1/4 - [c == t]) / 2.
  Tensor x = zeros({2, 4}, DType::f64).requires_grad_();
  loom::cross_entropy(x, tensor({1, 3}, DType::i64)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(),
            (std::vector<double>{0.125, -0.375, 0.125, 0.125, 0.125, 0.125, 0.125, -0.375}));
  // An ignored row gets no gradient and does not count in the mean's divisor.
  Tensor y = zeros({2, 4}, DType::f64).requires_grad_();
  loom::cross_entropy(y, tensor({1, -100}, DType::i64)).backward();
  EXPECT_EQ(y.grad().to_vector<double>(),
            (std::vector<double>{0.25, -0.75, 0.25, 0.25, 0, 0, 0, 0}));
}

TEST(GradcheckLoss, MseLoss) {
  for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
    SCOPED_TRACE(int(r));
    EXPECT_TRUE(gradcheck([r](In x) { return mse_loss(x[0], x[1], r); }, {leaf({3, 4}, 1), leaf({3, 4}, 2)}));
    EXPECT_TRUE(gradcheck([r](In x) { return mse_loss(x[0], x[1], r); },
                          {leaf_transposed({3, 4}, 3), leaf_strided({3, 4}, 4)}));
  }
  // d/dx mean((x - y)^2) = 2 (x - y) / N.
  Tensor x = tensor({1.0, 2.0}, DType::f64).requires_grad_();
  mse_loss(x, tensor({0.0, 4.0}, DType::f64)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1.0, -2.0}));
}

TEST(GradcheckNorm, LayerNormWithAndWithoutAffine) {
  EXPECT_TRUE(gradcheck([](In x) { return layer_norm(x[0], {5}, x[1], x[2]); },
                        {leaf({3, 5}, 1), leaf({5}, 2), leaf({5}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return layer_norm(x[0], {5}); }, {leaf({3, 5}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return layer_norm(x[0], {5}, x[1]); },
                        {leaf_transposed({3, 5}, 5), leaf({5}, 6)}));
  EXPECT_TRUE(gradcheck([](In x) { return layer_norm(x[0], {5}, Tensor(), x[1]); },
                        {leaf_strided({3, 5}, 7), leaf({5}, 8)}));
  EXPECT_TRUE(gradcheck([](In x) { return layer_norm(x[0], {3, 4}, x[1], x[2]); },
                        {leaf({2, 3, 4}, 9), leaf({3, 4}, 10), leaf({3, 4}, 11)}));
}

TEST(GradcheckNorm, HandDerivedLayerNorm) {
  // y = (x - mean) * rstd sums to 0 over the row whatever x is, so d sum(y)/dx = 0; and with
  // a bias b, d sum(y * w + b)/db = number of rows, d/dw_j = sum_rows y_j.
  Tensor x = from_vector<double>({1, 2, 4, -1, 0, 3}, Shape{2, 3}).requires_grad_();
  Tensor w = ones({3}, DType::f64).requires_grad_(), b = zeros({3}, DType::f64).requires_grad_();
  Tensor y = layer_norm(x, {3}, w, b);
  y.sum().backward();
  for (double g : x.grad().to_vector<double>()) {
    EXPECT_NEAR(g, 0.0, 1e-12);
  }
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{2, 2, 2}));
  std::vector<double> yv = y.to_vector<double>(), gw = w.grad().to_vector<double>();
  for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(gw[j], yv[j] + yv[3 + j], 1e-12);
}

// ---------------------------------------------------------------- indexing

TEST(GradcheckIndex, EmbeddingWithRepeatedIndices) {
  Tensor idx = from_vector<int64_t>({1, 3, 1, 0, 3, 3}, Shape{2, 3});
  EXPECT_TRUE(gradcheck([idx](In x) { return embedding(x[0], idx); }, {leaf({5, 4}, 1)}));
  EXPECT_TRUE(gradcheck([idx](In x) { return embedding(x[0], idx); }, {leaf_transposed({5, 4}, 2)}));
  // Hand: d sum(embedding(W, idx)) / dW_v = (count of v in idx) in every column.
  Tensor w = zeros({5, 2}, DType::f64).requires_grad_();
  embedding(w, idx).sum().backward();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{1, 1, 2, 2, 0, 0, 3, 3, 0, 0}));
}

TEST(GradcheckIndex, IndexSelect) {
  Tensor idx = tensor({2, 0, 2}, DType::i64);
  EXPECT_TRUE(gradcheck([idx](In x) { return index_select(x[0], 0, idx); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([idx](In x) { return x[0].index_select(1, idx); }, {leaf_transposed({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([idx](In x) { return x[0].index_select(-1, idx); }, {leaf_strided({2, 3}, 3)}));
}

TEST(GradcheckIndex, TrilTriu) {
  for (int64_t d : {-1, 0, 1}) {
    SCOPED_TRACE(d);
    EXPECT_TRUE(gradcheck([d](In x) { return tril(x[0], d); }, {leaf({4, 5}, 1)}));
    EXPECT_TRUE(gradcheck([d](In x) { return x[0].triu(d); }, {leaf_transposed({4, 5}, 2)}));
    EXPECT_TRUE(gradcheck([d](In x) { return x[0].tril(d); }, {leaf({2, 3, 3}, 3)}));
  }
}

// ---------------------------------------------------------------- dropout

TEST(GradcheckDropout, GradientIsTheMaskPattern) {
  // Dropout is random, so finite differences do not apply; with a fixed seed the gradient of
  // sum(dropout(x)) is exactly the forward's keep pattern: 1/(1-p) where kept, 0 where dropped.
  const double p = 0.4;
  manual_seed(7);
  Tensor x = leaf({64, 32}, 1, 0.5, 1.5);  // no zeros: out == 0 identifies a dropped element
  Tensor out = dropout(x, p);
  out.sum().backward();
  std::vector<double> xv = x.to_vector<double>(), ov = out.to_vector<double>(),
                      gv = x.grad().to_vector<double>();
  int64_t dropped = 0;
  for (size_t k = 0; k < xv.size(); ++k) {
    double want = ov[k] == 0.0 ? 0.0 : 1.0 / (1.0 - p);
    dropped += ov[k] == 0.0;
    ASSERT_DOUBLE_EQ(gv[k], want) << k;
    if (ov[k] != 0.0) {
      ASSERT_NEAR(ov[k], xv[k] / (1.0 - p), 1e-12) << k;
    }
  }
  EXPECT_NEAR(double(dropped) / double(xv.size()), p, 0.05);
  // Same seed, same mask.
  manual_seed(7);
  EXPECT_TRUE(dropout(x.detach(), p).equal(out.detach()));
  // Eval mode and p = 0 are the identity, gradient included.
  Tensor y = leaf({3}, 2);
  dropout(y, p, /*training=*/false).sum().backward();
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{1, 1, 1}));
}

// ---------------------------------------------------------------- views and conversions

TEST(GradcheckViews, ViewReshapeFlattenSqueezeUnsqueeze) {
  EXPECT_TRUE(gradcheck([](In x) { return x[0].view({4, 3}); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].view({-1}); }, {leaf({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].view({2, 1, 6}); }, {leaf({3, 4}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].reshape({12}); }, {leaf({3, 4}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].reshape({6, 2}); }, {leaf_transposed({3, 4}, 5)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].reshape({2, -1}); }, {leaf_strided({3, 4}, 6)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].flatten(); }, {leaf({2, 3, 4}, 7)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].flatten(1); }, {leaf_transposed({2, 3, 4}, 8)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].squeeze(); }, {leaf({1, 3, 1, 4}, 9)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].squeeze(0); }, {leaf({1, 4}, 10)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].unsqueeze(1); }, {leaf({3, 4}, 11)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].unsqueeze(-1); }, {leaf_transposed({3, 4}, 12)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].reshape({}); }, {leaf({1, 1}, 13)}));
}

TEST(GradcheckViews, TransposePermuteExpand) {
  EXPECT_TRUE(gradcheck([](In x) { return x[0].transpose(0, 1) * x[1]; },
                        {leaf({3, 4}, 1), leaf({4, 3}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].t(); }, {leaf_strided({3, 4}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].permute({2, 0, 1}); }, {leaf({2, 3, 4}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].permute({1, 2, 0}).contiguous(); },
                        {leaf_transposed({2, 3, 4}, 5)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].expand({2, 3, 4}); }, {leaf({3, 1}, 6)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].expand({-1, 5}); }, {leaf({3, 1}, 7)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].expand({2, 3}); }, {leaf({3}, 8)}));
}

TEST(GradcheckViews, NarrowSliceSelect) {
  EXPECT_TRUE(gradcheck([](In x) { return x[0].narrow(1, 1, 2); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].narrow(0, -2, 2); }, {leaf_transposed({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].slice(1, 0, 5, 2); }, {leaf({3, 6}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].slice(0, 1, std::nullopt, 3); }, {leaf({7, 2}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].slice(-1, std::nullopt, -1); }, {leaf_strided({3, 4}, 5)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].select(0, 2); }, {leaf({3, 4}, 6)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].select(1, -1); }, {leaf_transposed({3, 4}, 7)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0][1]; }, {leaf({2, 3}, 8)}));
  // Overlapping regions of one input add up.
  EXPECT_TRUE(gradcheck([](In x) { return x[0].narrow(0, 0, 2) + x[0].narrow(0, 1, 2); },
                        {leaf({3, 4}, 9)}));
}

TEST(GradcheckViews, ContiguousCloneTo) {
  EXPECT_TRUE(gradcheck([](In x) { return x[0].contiguous(); }, {leaf_transposed({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].contiguous() * 2.0; }, {leaf({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].clone(); }, {leaf_strided({3, 4}, 3)}));
  // Through f32: the finite difference needs an eps far above f32's rounding, and since the
  // function is linear a big eps costs nothing.
  EXPECT_TRUE(gradcheck([](In x) { return x[0].to(DType::f32) * 3.0; }, {leaf({3, 4}, 4)}, 1e-2,
                        1e-4));
  // The gradient of a dtype conversion comes back in the input's dtype.
  Tensor x = leaf({3}, 5);
  x.to(DType::f32).sum().backward();
  EXPECT_EQ(x.grad().dtype(), DType::f64);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 1, 1}));
}

TEST(GradcheckViews, CatStack) {
  EXPECT_TRUE(gradcheck([](In x) { return cat({x[0], x[1]}, 0); }, {leaf({2, 3}, 1), leaf({4, 3}, 2)}));
  EXPECT_TRUE(gradcheck([](In x) { return cat({x[0], x[1], x[0]}, -1); },
                        {leaf_transposed({2, 3}, 3), leaf({2, 1}, 4)}));
  EXPECT_TRUE(gradcheck([](In x) { return stack({x[0], x[1]}, 0); }, {leaf({2, 3}, 5), leaf({2, 3}, 6)}));
  EXPECT_TRUE(gradcheck([](In x) { return stack({x[0], x[1]}, -1); },
                        {leaf_strided({2, 3}, 7), leaf_transposed({2, 3}, 8)}));
  // A constant among the parts gets no gradient and does not disturb the others.
  Tensor c = leaf({2, 3}, 9).detach();
  EXPECT_TRUE(gradcheck([c](In x) { return cat({c, x[0]}, 1); }, {leaf({2, 2}, 10)}));
}

TEST(GradcheckViews, SplitChunkWithSomePartsUnused) {
  EXPECT_TRUE(gradcheck(
      [](In x) {
        TensorList p = x[0].split(2, 0);  // 2, 2, 1 rows
        return p[0] * 2.0 + p[1];         // the last part is unused: its gradient is zero
      },
      {leaf({5, 3}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return split(x[0], 2, 1)[1]; }, {leaf_transposed({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck(
      [](In x) {
        TensorList p = x[0].chunk(3, 1);
        return p[2] - p[0];
      },
      {leaf({2, 6}, 3)}));
  EXPECT_TRUE(gradcheck([](In x) { return chunk(x[0], 2, 0)[0]; }, {leaf_strided({4, 3}, 4)}));
}

TEST(GradcheckViews, HandDerivedTranspose) {
  // L = sum(x^T * w)  =>  dL/dx = w^T.
  Tensor x = zeros({2, 3}, DType::f64).requires_grad_();
  Tensor w = from_vector<double>({1, 2, 3, 4, 5, 6}, Shape{3, 2});
  (x.t() * w).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 3, 5, 2, 4, 6}));
}

TEST(GradcheckComposite, NormAndChains) {
  EXPECT_TRUE(gradcheck([](In x) { return x[0].norm(); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](In x) { return x[0].norm(3.0); }, {leaf({3, 4}, 2)}));
  // An MLP-like chain with broadcasting, views and a loss.
  Tensor target = tensor({1, 0, 2}, DType::i64);
  EXPECT_TRUE(gradcheck(
      [target](In x) {
        Tensor h = gelu(linear(x[0], x[1], x[2]), true);
        Tensor logits = matmul(layer_norm(h, {4}), x[3]);
        return loom::cross_entropy(logits, target, -100, 0.05);
      },
      {leaf({3, 5}, 3), leaf({4, 5}, 4), leaf({4}, 5), leaf({4, 3}, 6)}));
}

TEST(GradcheckComposite, TransformerBlockInputAndParameters) {
  // A whole pre-norm block (attention with its causal mask and split/view/transpose heads,
  // GELU MLP, two residuals) in f64: gradients of the input and of parameters deep inside.
  DefaultDTypeGuard f64(DType::f64);
  manual_seed(5);
  nn::GPTConfig cfg;
  cfg.n_embd = 8;
  cfg.n_head = 2;
  auto block = std::make_shared<nn::Block>(cfg);
  {
    // Non-trivial LayerNorm affine parameters (they start at 1 and 0).
    NoGradGuard g;
    block->ln1->weight.normal_(1.0, 0.3);
    block->ln2->bias.normal_(0.0, 0.3);
  }
  Tensor x = leaf({2, 4, 8}, 1);
  EXPECT_TRUE(gradcheck([block](In in) { return (*block)(in[0]); },
                        {x, block->ln1->weight, block->attn->qkv->weight, block->mlp->proj->bias,
                         block->ln2->bias}));
}

TEST(Gradcheck, ReportsTheFailingElement) {
  // A deliberately wrong "gradient" (a hook doubles it) is caught and described.
  auto fn = [](In x) {
    Tensor y = x[0] * 1.0;
    if (y.requires_grad()) y.register_hook([](const Tensor& g) { return g * 2.0; });
    return y;
  };
  ::testing::AssertionResult r = gradcheck(fn, {leaf({2, 2}, 1)});
  ASSERT_FALSE(r);
  EXPECT_THAT(r.message(), ::testing::HasSubstr("input 0"));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("index [0, 0]"));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("analytical"));
  EXPECT_THAT(r.message(), ::testing::HasSubstr("numerical"));
  // Inputs that are not f64 leaves requiring grad are refused.
  EXPECT_FALSE(gradcheck(fn, {randn({2}, DType::f32).requires_grad_()}));
  EXPECT_FALSE(gradcheck(fn, {randn({2}, DType::f64)}));
}

}  // namespace
}  // namespace loom
