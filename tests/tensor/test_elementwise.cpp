// Tests for the elementwise native ops (tensor/native_elementwise.cpp + kernels/cpu/{binary,
// unary}.cpp): every op against f64 reference loops written here, all meaningful dtypes,
// broadcasting (row, scalar and general strided paths agree), non-contiguous inputs, in-place
// binary_, meta inference without allocation, and error messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "tensor/allocator.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/tensor.h"

namespace loom {
namespace {

using native::BinaryOp;
using native::UnaryOp;
using ::testing::HasSubstr;

constexpr DType kFloatTypes[] = {DType::f64, DType::f32, DType::f16, DType::bf16};
constexpr DType kIntTypes[] = {DType::i64, DType::i32, DType::u8};

// Relative tolerance of a result computed in dtype t (16-bit: rounding of the output).
double tol(DType t) {
  switch (t) {
    case DType::f64: return 1e-12;
    case DType::f32: return 2e-6;
    case DType::f16: return 2e-3;
    case DType::bf16: return 1.6e-2;
    default: return 0.0;
  }
}

// Random values in [lo, hi) of dtype t (integers: rounded down), made in f64 then converted.
Tensor random_tensor(const Shape& shape, DType t, double lo, double hi) {
  Tensor u = rand(shape, DType::f64);
  std::vector<double> v = u.to_vector<double>();
  for (double& x : v) {
    x = lo + (hi - lo) * x;
    if (!is_floating(t)) x = std::floor(x);
  }
  return native::to(from_vector(v, shape), Device::cpu(), t);
}

// Values as an integer dtype stores them after wrapping (the reference for wrap-around ops).
double wrap_to(double v, DType t) {
  if (t == DType::u8) return double(uint8_t(int64_t(v)));
  if (t == DType::i32) return double(int32_t(uint32_t(uint64_t(int64_t(v)))));
  return v;
}

// Rounds a reference value to what dtype t can hold.
double round_to(double v, DType t) {
  Tensor s = native::to(scalar_tensor(v, DType::f64), Device::cpu(), t);
  return s.item<double>();
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, DType t,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double rtol = tol(t), atol = is_floating(t) ? rtol * 1e-3 : 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " at " << i;
      continue;
    }
    if (std::isinf(want[i])) {
      EXPECT_EQ(got[i], want[i]) << what << " at " << i;
      continue;
    }
    EXPECT_NEAR(got[i], want[i], atol + rtol * std::abs(want[i])) << what << " at " << i;
  }
}

double ref_binary(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
    case BinaryOp::pow: return std::pow(a, b);
    case BinaryOp::maximum: return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b);
    case BinaryOp::minimum: return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b);
    case BinaryOp::eq: return a == b;
    case BinaryOp::ne: return a != b;
    case BinaryOp::lt: return a < b;
    case BinaryOp::le: return a <= b;
    case BinaryOp::gt: return a > b;
    case BinaryOp::ge: return a >= b;
  }
  return 0;
}

constexpr BinaryOp kBinaryOps[] = {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div,
                                   BinaryOp::pow, BinaryOp::maximum, BinaryOp::minimum,
                                   BinaryOp::eq,  BinaryOp::ne,  BinaryOp::lt, BinaryOp::le,
                                   BinaryOp::gt,  BinaryOp::ge};
bool is_cmp(BinaryOp op) { return op >= BinaryOp::eq; }

// Checks binary(op, a, b) against the f64 loop over the broadcast inputs' values.
void check_binary(BinaryOp op, const Tensor& a, const Tensor& b, const std::string& what) {
  Tensor out = native::binary(op, a, b);
  Shape shape = broadcast_shapes(a.sizes(), b.sizes(), "test");
  ASSERT_EQ(out.sizes(), shape) << what;
  std::vector<double> av = native::expand(a, shape).to_vector<double>();
  std::vector<double> bv = native::expand(b, shape).to_vector<double>();
  DType rt = out.dtype();
  std::vector<double> want(av.size());
  for (size_t i = 0; i < av.size(); ++i) {
    double r = ref_binary(op, av[i], bv[i]);
    want[i] = is_floating(rt) ? r : wrap_to(r, rt);
  }
  if (is_cmp(op)) {
    EXPECT_EQ(rt, DType::bool_) << what;
    EXPECT_EQ(out.to_vector<double>(), want) << what;
  } else {
    expect_close(out.to_vector<double>(), want, rt, what);
  }
}

TEST(ElementwiseBinary, EveryOpEveryDtypeMatchesF64Reference) {
  for (DType t : kFloatTypes)
    for (BinaryOp op : kBinaryOps) {
      double lo = op == BinaryOp::pow ? 0.1 : -3, hi = 3;
      Tensor a = random_tensor({3, 4, 5}, t, lo, hi), b = random_tensor({3, 4, 5}, t, 0.5, 3);
      check_binary(op, a, b, detail::concat(dtype_name(t), " op ", int(op)));
      // Comparisons see equal values too.
      if (is_cmp(op)) check_binary(op, a, a, detail::concat(dtype_name(t), " self op ", int(op)));
    }
  for (DType t : kIntTypes)
    for (BinaryOp op : kBinaryOps) {
      bool u8 = t == DType::u8;
      double lo = u8 || op == BinaryOp::pow ? 0 : -20, hi = op == BinaryOp::pow ? 5 : 120;
      Tensor a = random_tensor({4, 33}, t, lo, hi);
      Tensor b = random_tensor({4, 33}, t, op == BinaryOp::pow ? 0 : 1, op == BinaryOp::pow ? 4 : 90);
      check_binary(op, a, b, detail::concat(dtype_name(t), " op ", int(op)));
    }
}

// Every non-NaN f16 value survives the kernels' block conversions (F16C when built with it)
// bit for bit: x * 1 and -x are exact.
TEST(ElementwiseBinary, F16BlockConversionIsExactForEveryValue) {
  std::vector<double> v;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    float f = f16_to_f32(uint16_t(bits));
    if (!std::isnan(f)) v.push_back(f);
  }
  Tensor x = native::to(from_vector(v), Device::cpu(), DType::f16);
  std::vector<double> same = native::binary(BinaryOp::mul, x, native::wrap_scalar(1.0, x))
                                 .to_vector<double>();
  std::vector<double> neg = native::unary(UnaryOp::neg, x).to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_EQ(same[i], v[i]) << i;
    ASSERT_EQ(std::signbit(same[i]), std::signbit(v[i])) << i;
    ASSERT_EQ(neg[i], -v[i]) << i;
    ASSERT_NE(std::signbit(neg[i]), std::signbit(v[i])) << i;
  }
  // And values that round: f32 results land on the nearest-even f16 (0.1 * 1 -> f16(0.1)).
  Tensor y = native::to(random_tensor({5000}, DType::f32, -70000, 70000), Device::cpu(), DType::f16);
  Tensor third = native::binary(BinaryOp::div, y, native::wrap_scalar(3.0, y));
  Tensor want = native::to(native::binary(BinaryOp::div, native::to(y, Device::cpu(), DType::f32),
                                          native::wrap_scalar(3.0, zeros({1}))),
                           Device::cpu(), DType::f16);
  EXPECT_TRUE(third.equal(want));
}

TEST(ElementwiseBinary, IntegerDivisionIsTrueDivisionInDefaultDtype) {
  Tensor a = tensor({7, -7, 1, 0}), b = tensor({2, 2, 3, 5});
  Tensor q = native::binary(BinaryOp::div, a, b);
  EXPECT_EQ(q.dtype(), DType::f32);
  expect_close(q.to_vector<double>(), {3.5, -3.5, 1.0 / 3, 0}, DType::f32, "div");
  Tensor u = native::to(tensor({200, 10}), Device::cpu(), DType::u8);
  EXPECT_EQ(native::binary(BinaryOp::div, u, u).dtype(), DType::f32);
}

TEST(ElementwiseBinary, IntegerArithmeticWrapsAround) {
  Tensor u = native::to(tensor({250, 3}), Device::cpu(), DType::u8);
  Tensor v = native::to(tensor({10, 5}), Device::cpu(), DType::u8);
  EXPECT_EQ(native::binary(BinaryOp::add, u, v).to_vector<int64_t>(), (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(native::binary(BinaryOp::sub, v, u).to_vector<int64_t>(),
            (std::vector<int64_t>{16, 2}));
  Tensor big = tensor({int64_t(std::numeric_limits<int64_t>::max())});
  EXPECT_EQ(native::binary(BinaryOp::add, big, tensor({int64_t(1)})).item<int64_t>(),
            std::numeric_limits<int64_t>::min());
}

TEST(ElementwiseBinary, PowNegativeBasesAndScalarExponentFastPaths) {
  Tensor base = tensor({-2.0, -2.0, -8.0, 4.0, 0.0, -1.5});
  Tensor ex = tensor({3.0, 2.0, 1.0 / 3, 0.5, -1.0, 2.0});
  std::vector<double> got = native::binary(BinaryOp::pow, base, ex).to_vector<double>();
  EXPECT_EQ(got[0], -8.0);
  EXPECT_EQ(got[1], 4.0);
  EXPECT_TRUE(std::isnan(got[2]));
  EXPECT_EQ(got[3], 2.0);
  EXPECT_TRUE(std::isinf(got[4]));
  EXPECT_FLOAT_EQ(got[5], 2.25f);
  // Each special-cased constant exponent (and a generic one) against std::pow.
  Tensor x = random_tensor({1000}, DType::f32, -4, 4);
  for (double e : {2.0, 3.0, 0.5, -0.5, 1.0, -1.0, -2.0, 1.7, 4.0})
    check_binary(BinaryOp::pow, x, native::wrap_scalar(e, x), detail::concat("pow ", e));
  // Integers: squaring, and PyTorch's negative-exponent rule.
  Tensor ib = tensor({-3, 2, 1, -1, 5}), ie = tensor({3, 10, -2, -3, -1});
  EXPECT_EQ(native::binary(BinaryOp::pow, ib, ie).to_vector<int64_t>(),
            (std::vector<int64_t>{-27, 1024, 1, -1, 0}));
}

TEST(ElementwiseBinary, MaximumMinimumPropagateNaN) {
  Tensor a = tensor({NAN, 1.0, 2.0, -0.5}), b = tensor({1.0, NAN, 3.0, -1.0});
  for (DType t : kFloatTypes) {
    Tensor x = native::to(a, Device::cpu(), t), y = native::to(b, Device::cpu(), t);
    for (BinaryOp op : {BinaryOp::maximum, BinaryOp::minimum}) {
      std::vector<double> r = native::binary(op, x, y).to_vector<double>();
      EXPECT_TRUE(std::isnan(r[0]) && std::isnan(r[1])) << dtype_name(t);
      EXPECT_EQ(r[2], op == BinaryOp::maximum ? 3.0 : 2.0);
      EXPECT_EQ(r[3], op == BinaryOp::maximum ? -0.5 : -1.0);
    }
  }
}

TEST(ElementwiseBinary, BoolArithmeticAndComparisons) {
  Tensor a = from_vector(std::vector<bool>{true, true, false, false});
  Tensor b = from_vector(std::vector<bool>{true, false, true, false});
  EXPECT_EQ(native::binary(BinaryOp::add, a, b).to_vector<int>(), (std::vector<int>{1, 1, 1, 0}));
  EXPECT_EQ(native::binary(BinaryOp::mul, a, b).to_vector<int>(), (std::vector<int>{1, 0, 0, 0}));
  EXPECT_EQ(native::binary(BinaryOp::ne, a, b).to_vector<int>(), (std::vector<int>{0, 1, 1, 0}));
  EXPECT_EQ(native::binary(BinaryOp::add, a, b).dtype(), DType::bool_);
  try {
    native::binary(BinaryOp::sub, a, b);
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("sub: not supported for bool"));
  }
}

// Row (M, N) op (N), 0-dim scalar and column cases take the fast paths of the kernel walk;
// each must agree with the reference and with the general strided path (the same operands
// made non-contiguous), on sizes big enough to be split across threads.
TEST(ElementwiseBinary, BroadcastFastPathsMatchGeneralPath) {
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32}) {
    Tensor a = random_tensor({301, 257}, t, -5, 5);
    Tensor row = random_tensor({257}, t, 1, 5);
    Tensor col = random_tensor({301, 1}, t, 1, 5);
    Tensor scalar = random_tensor({}, t, 1, 5);
    // The same values of `a` laid out transposed in memory, so that every run is strided.
    Tensor a_t = native::transpose(native::clone(native::transpose(a, 0, 1)), 0, 1);
    ASSERT_FALSE(a_t.is_contiguous());
    for (BinaryOp op : {BinaryOp::add, BinaryOp::mul, BinaryOp::sub, BinaryOp::maximum,
                        BinaryOp::gt}) {
      for (const Tensor* b : {&row, &col, &scalar}) {
        std::string what = detail::concat(dtype_name(t), " op ", int(op), " b ",
                                          shape_str(b->sizes()));
        check_binary(op, a, *b, what);
        check_binary(op, *b, a, what + " swapped");
        Tensor fast = native::binary(op, a, *b);
        EXPECT_TRUE(fast.equal(native::binary(op, a_t, *b))) << what;
        Tensor b_full = native::clone(native::expand(*b, a.sizes()));
        EXPECT_TRUE(fast.equal(native::binary(op, a, b_full))) << what;
      }
    }
  }
  // General broadcast of both operands: (2, 1, 3) op (4, 1) -> (2, 4, 3).
  Tensor x = random_tensor({2, 1, 3}, DType::f32, -1, 1), y = random_tensor({4, 1}, DType::f32, -1, 1);
  check_binary(BinaryOp::mul, x, y, "two-sided broadcast");
  EXPECT_EQ(native::binary(BinaryOp::mul, x, y).sizes(), (Shape{2, 4, 3}));
}

TEST(ElementwiseBinary, NonContiguousInputs) {
  for (DType t : kFloatTypes) {
    Tensor base = random_tensor({6, 10}, t, -2, 2);
    Tensor a = native::transpose(base, 0, 1);                       // (10, 6)
    Tensor b = native::slice(random_tensor({10, 12}, t, -2, 2), 1, 0, 12, 2);  // (10, 6) step 2
    ASSERT_FALSE(a.is_contiguous());
    ASSERT_FALSE(b.is_contiguous());
    for (BinaryOp op : {BinaryOp::add, BinaryOp::div, BinaryOp::minimum, BinaryOp::le})
      check_binary(op, a, b, detail::concat(dtype_name(t), " strided op ", int(op)));
  }
}

TEST(ElementwiseBinary, ResultDtypes) {
  Tensor h = zeros({3}, DType::f16), f = zeros({3}, DType::f32), i = zeros({3}, DType::i64);
  Tensor i32 = zeros({3}, DType::i32), u = zeros({3}, DType::u8), bl = zeros({3}, DType::bool_);
  auto dt = [](const Tensor& a, const Tensor& b) {
    return native::binary(BinaryOp::mul, a, b).dtype();
  };
  // Wrapped scalars never promote a floating tensor, nor an integer one for integral values.
  EXPECT_EQ(dt(h, native::wrap_scalar(2.0, h)), DType::f16);
  EXPECT_EQ(dt(native::wrap_scalar(0.1, h), h), DType::f16);
  EXPECT_EQ(dt(u, native::wrap_scalar(3, u)), DType::u8);
  EXPECT_EQ(dt(i32, native::wrap_scalar(3, i32)), DType::i32);
  EXPECT_EQ(dt(i, native::wrap_scalar(0.5, i)), DType::f32);
  EXPECT_EQ(dt(bl, native::wrap_scalar(2, bl)), DType::i64);
  // A value beyond u8 is held as i64 but, being 0-dim, still gives u8 (wrapping, as PyTorch).
  EXPECT_EQ(native::wrap_scalar(300, u).dtype(), DType::i64);
  EXPECT_EQ(dt(u, native::wrap_scalar(300, u)), DType::u8);
  // Tensor-tensor promotion, and 0-dim tensors of a lower or equal category.
  EXPECT_EQ(dt(h, f), DType::f32);
  EXPECT_EQ(dt(h, zeros({3}, DType::bf16)), DType::f32);
  EXPECT_EQ(dt(i, f), DType::f32);
  EXPECT_EQ(dt(u, i32), DType::i32);
  EXPECT_EQ(dt(h, zeros({}, DType::f64)), DType::f16);
  EXPECT_EQ(dt(i32, zeros({}, DType::f64)), DType::f64);
  EXPECT_EQ(dt(zeros({}, DType::f64), zeros({}, DType::f32)), DType::f64);
  // The f16 result is computed from the f16 values, rounded once.
  Tensor x = native::to(tensor({1.5, -3.0, 1000.0}), Device::cpu(), DType::f16);
  EXPECT_EQ(native::binary(BinaryOp::mul, x, native::wrap_scalar(2.0, x)).to_vector<double>(),
            (std::vector<double>{3.0, -6.0, 2000.0}));
  // Mixed dtypes compute in the promoted dtype.
  check_binary(BinaryOp::add, random_tensor({5}, DType::i64, -9, 9),
               random_tensor({5}, DType::f32, -1, 1), "i64 + f32");
  check_binary(BinaryOp::sub, random_tensor({5}, DType::f16, -9, 9),
               random_tensor({5}, DType::f32, -1, 1), "f16 - f32");
}

TEST(ElementwiseBinaryInPlace, UpdatesInPlaceWithBroadcastAndCast) {
  Tensor a = random_tensor({40, 50}, DType::f32, -1, 1);
  Tensor before = native::clone(a);
  Tensor row = random_tensor({50}, DType::f32, -1, 1);
  void* ptr = a.raw_data_ptr();
  uint64_t v0 = a.version();
  native::binary_(BinaryOp::add, a, row);
  EXPECT_EQ(a.raw_data_ptr(), ptr);
  EXPECT_GT(a.version(), v0);
  EXPECT_TRUE(a.allclose(native::binary(BinaryOp::add, before, row), 0, 0));
  // f16 a with an f32 b: computed in f32, cast back to f16.
  Tensor h = random_tensor({7, 3}, DType::f16, -2, 2);
  Tensor hf = native::to(h, Device::cpu(), DType::f32);
  Tensor g = random_tensor({7, 3}, DType::f32, -2, 2);
  native::binary_(BinaryOp::mul, h, g);
  EXPECT_EQ(h.dtype(), DType::f16);
  Tensor want = native::to(native::binary(BinaryOp::mul, hf, g), Device::cpu(), DType::f16);
  EXPECT_TRUE(h.equal(want));
  // Through a non-contiguous view: only the viewed elements change.
  Tensor m = zeros({4, 6});
  Tensor col = native::slice(m, 1, 1, 6, 2);  // (4, 3), columns 1, 3, 5
  native::binary_(BinaryOp::add, col, native::wrap_scalar(2.0, col));
  std::vector<double> mv = m.to_vector<double>();
  for (int i = 0; i < 24; ++i) EXPECT_EQ(mv[i], (i % 6) % 2 == 1 ? 2.0 : 0.0) << i;
  // a -= a[0]: b aliases a's storage, so the op must not read overwritten values.
  Tensor s = tensor({3.0, 5.0, 7.0});
  native::binary_(BinaryOp::sub, s, native::select(s, 0, 0));
  EXPECT_EQ(s.to_vector<double>(), (std::vector<double>{0.0, 2.0, 4.0}));
  // a += a is fine in one pass; a += a^T is not and must still be right.
  Tensor sq = native::view(tensor({1.0, 2.0, 3.0, 4.0}), {2, 2});
  Tensor sq2 = native::clone(sq);
  native::binary_(BinaryOp::add, sq, sq);
  EXPECT_EQ(sq.to_vector<double>(), (std::vector<double>{2, 4, 6, 8}));
  native::binary_(BinaryOp::add, sq2, native::transpose(sq2, 0, 1));
  EXPECT_EQ(sq2.to_vector<double>(), (std::vector<double>{2, 5, 5, 8}));
  // Comparisons in place give 0/1 in a's dtype.
  Tensor c = tensor({1.0, 5.0});
  native::binary_(BinaryOp::gt, c, native::wrap_scalar(2.0, c));
  EXPECT_EQ(c.to_vector<double>(), (std::vector<double>{0.0, 1.0}));
}

TEST(ElementwiseBinaryInPlace, Errors) {
  Tensor a = zeros({2, 3});
  try {
    native::binary_(BinaryOp::add, a, zeros({4, 2, 3}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("add_: the result shape [4, 2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("in-place operand's shape [2, 3]"));
  }
  try {
    native::binary_(BinaryOp::div, zeros({3}, DType::i64), tensor({1, 2, 3}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("div_: the result dtype f32 can't be cast"));
  }
  try {
    native::binary_(BinaryOp::add, native::expand(zeros({1, 3}), {4, 3}), zeros({4, 3}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("several elements at one memory location"));
  }
}

double ref_unary(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::exp: return std::exp(x);
    case UnaryOp::log: return std::log(x);
    case UnaryOp::sqrt: return std::sqrt(x);
    case UnaryOp::rsqrt: return 1 / std::sqrt(x);
    case UnaryOp::abs: return std::abs(x);
    case UnaryOp::tanh: return std::tanh(x);
    case UnaryOp::sigmoid: return 1 / (1 + std::exp(-x));
    case UnaryOp::relu: return x > 0 ? x : 0;
    case UnaryOp::gelu_tanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case UnaryOp::gelu_erf: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case UnaryOp::square: return x * x;
    case UnaryOp::sign: return (x > 0) - (x < 0);
    case UnaryOp::logical_not: return x == 0;
  }
  return 0;
}

constexpr UnaryOp kUnaryOps[] = {UnaryOp::neg,      UnaryOp::exp,       UnaryOp::log,
                                 UnaryOp::sqrt,     UnaryOp::rsqrt,     UnaryOp::abs,
                                 UnaryOp::tanh,     UnaryOp::sigmoid,   UnaryOp::relu,
                                 UnaryOp::gelu_tanh, UnaryOp::gelu_erf, UnaryOp::square,
                                 UnaryOp::sign,     UnaryOp::logical_not};
bool positive_domain(UnaryOp op) {
  return op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt;
}

void check_unary(UnaryOp op, const Tensor& x, const std::string& what) {
  Tensor out = native::unary(op, x);
  ASSERT_EQ(out.sizes(), x.sizes()) << what;
  std::vector<double> xv = x.to_vector<double>(), want(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) want[i] = ref_unary(op, xv[i]);
  DType t = out.dtype();
  if (!is_floating(t))
    for (double& w : want) w = wrap_to(w, t);
  if (op == UnaryOp::gelu_erf || op == UnaryOp::gelu_tanh) {
    // x/2 (1 + erf(..)) cancels for negative x (PyTorch uses the same formula): the error is
    // absolute, about |x| ulp(1).
    std::vector<double> got = out.to_vector<double>();
    for (size_t i = 0; i < xv.size(); ++i)
      EXPECT_NEAR(got[i], want[i], tol(t) * (std::abs(want[i]) + std::abs(xv[i]))) << what;
    return;
  }
  expect_close(out.to_vector<double>(), want, t, what);
}

TEST(ElementwiseUnary, EveryOpEveryFloatDtypeMatchesF64Reference) {
  for (DType t : kFloatTypes)
    for (UnaryOp op : kUnaryOps) {
      double lo = positive_domain(op) ? 0.01 : -6, hi = 6;
      // 5000 elements: several conversion blocks, one thread; 70000: split across threads.
      for (int64_t n : {5000, 70000}) {
        Tensor x = random_tensor({n}, t, lo, hi);
        check_unary(op, x, detail::concat(dtype_name(t), " ", int(op), " n=", n));
      }
      Tensor strided = native::transpose(random_tensor({30, 20}, t, lo, hi), 0, 1);
      check_unary(op, strided, detail::concat(dtype_name(t), " strided ", int(op)));
      Tensor bcast = native::expand(random_tensor({1, 20}, t, lo, hi), {30, 20});
      check_unary(op, bcast, detail::concat(dtype_name(t), " broadcast input ", int(op)));
    }
}

TEST(ElementwiseUnary, SpecialValues) {
  Tensor x = tensor({0.0, -0.0, INFINITY, -INFINITY, NAN, -100.0, 100.0});
  auto r = [&](UnaryOp op) { return native::unary(op, x).to_vector<double>(); };
  EXPECT_TRUE(std::isnan(r(UnaryOp::relu)[4]));
  EXPECT_TRUE(std::signbit(r(UnaryOp::neg)[0]));  // -(+0) is -0
  EXPECT_FALSE(std::signbit(r(UnaryOp::neg)[1]));
  EXPECT_EQ(r(UnaryOp::sigmoid)[5], 0.0);
  EXPECT_EQ(r(UnaryOp::sigmoid)[6], 1.0);
  EXPECT_EQ(r(UnaryOp::tanh)[2], 1.0);
  EXPECT_EQ(r(UnaryOp::tanh)[3], -1.0);
  EXPECT_EQ(r(UnaryOp::sign)[4], 0.0);  // PyTorch's CPU sign gives 0 for NaN
  EXPECT_EQ(r(UnaryOp::gelu_erf)[5], -0.0);
  EXPECT_EQ(r(UnaryOp::gelu_erf)[6], 100.0);
  EXPECT_EQ(r(UnaryOp::log)[0], -INFINITY);
  EXPECT_EQ(r(UnaryOp::rsqrt)[0], INFINITY);
  EXPECT_EQ(r(UnaryOp::logical_not), (std::vector<double>{1, 1, 0, 0, 0, 0, 0}));
}

TEST(ElementwiseUnary, IntegerDtypes) {
  for (DType t : kIntTypes) {
    Tensor x = random_tensor({3, 50}, t, t == DType::u8 ? 0 : -100, 100);
    for (UnaryOp op : {UnaryOp::neg, UnaryOp::abs, UnaryOp::relu, UnaryOp::square, UnaryOp::sign,
                       UnaryOp::logical_not}) {
      Tensor out = native::unary(op, x);
      EXPECT_EQ(out.dtype(), op == UnaryOp::logical_not ? DType::bool_ : t);
      check_unary(op, x, detail::concat(dtype_name(t), " ", int(op)));
    }
    // Floating ops compute in the default dtype.
    for (UnaryOp op : {UnaryOp::exp, UnaryOp::sigmoid, UnaryOp::gelu_erf}) {
      Tensor small = random_tensor({20}, t, 0, 5);
      EXPECT_EQ(native::unary(op, small).dtype(), DType::f32);
      check_unary(op, small, detail::concat(dtype_name(t), " floating ", int(op)));
    }
  }
  Tensor b = from_vector(std::vector<bool>{true, false});
  EXPECT_EQ(native::unary(UnaryOp::logical_not, b).to_vector<int>(), (std::vector<int>{0, 1}));
  EXPECT_EQ(native::unary(UnaryOp::exp, b).dtype(), DType::f32);
  try {
    native::unary(UnaryOp::neg, b);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("neg: not supported for bool tensors; use logical_not"));
  }
}

// d op / dx from central differences of the f64 reference, and the backward's formula.
TEST(ElementwiseUnaryBackward, MatchesFiniteDifferencesAndAllFloatDtypes) {
  for (UnaryOp op : kUnaryOps) {
    if (op == UnaryOp::logical_not) continue;
    double lo = positive_domain(op) ? 0.2 : -4, hi = 4;
    Tensor x = random_tensor({257}, DType::f64, lo, hi);
    Tensor g = random_tensor({257}, DType::f64, -1, 1);
    Tensor out = native::unary(op, x);
    Tensor gi = native::unary_backward(op, g, x, out);
    std::vector<double> xv = x.to_vector<double>(), gv = g.to_vector<double>(), want(xv.size());
    const double h = 1e-6;
    for (size_t i = 0; i < xv.size(); ++i) {
      double d = (ref_unary(op, xv[i] + h) - ref_unary(op, xv[i] - h)) / (2 * h);
      if (op == UnaryOp::sign) d = 0;
      want[i] = gv[i] * d;
    }
    std::vector<double> got = gi.to_vector<double>();
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-6 * (1 + std::abs(want[i]))) << int(op) << " at " << i;
    // Lower precision against the f64 backward, on the same rounded inputs.
    for (DType t : {DType::f32, DType::f16, DType::bf16}) {
      Tensor xt = native::to(x, Device::cpu(), t), gt = native::to(g, Device::cpu(), t);
      Tensor ot = native::unary(op, xt);
      Tensor r64 = native::unary_backward(op, native::to(gt, Device::cpu(), DType::f64),
                                          native::to(xt, Device::cpu(), DType::f64),
                                          native::to(ot, Device::cpu(), DType::f64));
      Tensor rt = native::unary_backward(op, gt, xt, ot);
      EXPECT_EQ(rt.dtype(), t);
      std::vector<double> a = rt.to_vector<double>(), b = r64.to_vector<double>();
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_NEAR(a[i], b[i], 4 * tol(t) * (1 + std::abs(b[i]))) << int(op) << dtype_name(t);
    }
  }
  // relu at exactly 0 has gradient 0 (x > 0).
  Tensor z = tensor({0.0, 1.0, -1.0});
  EXPECT_EQ(native::unary_backward(UnaryOp::relu, ones({3}), z, native::unary(UnaryOp::relu, z))
                .to_vector<double>(),
            (std::vector<double>{0, 1, 0}));
  // A broadcast (expanded) grad, as sum's backward gives.
  Tensor gx = native::expand(scalar_tensor(2.0), {3});
  EXPECT_EQ(native::unary_backward(UnaryOp::square, gx, z, Tensor()).to_vector<double>(),
            (std::vector<double>{0, 4, -4}));
  try {
    native::unary_backward(UnaryOp::exp, ones({3}), z, Tensor());
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("exp_backward: needs the forward output"));
  }
}

TEST(ElementwiseSelect, WhereAndMaskedFill) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i64, DType::u8, DType::bool_}) {
    Tensor cond = native::binary(BinaryOp::gt, random_tensor({5, 70}, DType::f32, -1, 1),
                                 scalar_tensor(0.0));
    Tensor a = random_tensor({5, 70}, t, 0, 2), b = random_tensor({70}, t, 0, 2);
    Tensor w = native::where(cond, a, b);
    EXPECT_EQ(w.dtype(), t);
    std::vector<double> cv = cond.to_vector<double>(), av = a.to_vector<double>(),
                        bv = native::expand(b, {5, 70}).to_vector<double>();
    std::vector<double> want(cv.size());
    for (size_t i = 0; i < cv.size(); ++i) want[i] = cv[i] != 0 ? av[i] : bv[i];
    EXPECT_EQ(w.to_vector<double>(), want) << dtype_name(t);
    // masked_fill with a row mask broadcast over x (and x non-contiguous).
    Tensor x = native::transpose(random_tensor({70, 5}, t, 0, 2), 0, 1);  // (5, 70)
    Tensor mask = native::select(cond, 0, 0);                             // (70)
    Tensor f = native::masked_fill(x, mask, 1.0);
    std::vector<double> xv = x.to_vector<double>(), mv = native::expand(mask, {5, 70}).to_vector<double>();
    for (size_t i = 0; i < xv.size(); ++i) want[i] = mv[i] != 0 ? 1.0 : xv[i];
    EXPECT_EQ(f.to_vector<double>(), want) << dtype_name(t);
  }
  // -inf fill (attention masks) and type promotion in where.
  Tensor s = native::masked_fill(zeros({2, 2}), native::unary(UnaryOp::logical_not, zeros({2}, DType::bool_)),
                                 -INFINITY);
  EXPECT_EQ(s.to_vector<double>(), (std::vector<double>(4, -INFINITY)));
  EXPECT_EQ(native::where(zeros({2}, DType::bool_), zeros({2}, DType::i64), zeros({2})).dtype(),
            DType::f32);
  try {
    native::masked_fill(zeros({3}), zeros({2, 3}, DType::bool_), 0.0);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("masked_fill: the mask of shape [2, 3] does not broadcast"));
  }
  EXPECT_THROW(native::where(zeros({2}), zeros({2}), zeros({2})), ValueError);
}

TEST(ElementwiseClamp, BoundsNaNAndDtypes) {
  for (DType t : {DType::f64, DType::f32, DType::f16, DType::bf16, DType::i64, DType::i32}) {
    Tensor x = random_tensor({9, 40}, t, -10, 10);
    std::vector<double> xv = x.to_vector<double>();
    auto check = [&](std::optional<double> lo, std::optional<double> hi) {
      std::vector<double> got = native::clamp(x, lo, hi).to_vector<double>();
      for (size_t i = 0; i < xv.size(); ++i) {
        double v = xv[i];
        if (lo) v = std::max(v, round_to(*lo, t));
        if (hi) v = std::min(v, round_to(*hi, t));
        EXPECT_EQ(got[i], v) << dtype_name(t);
      }
    };
    check(-2.0, 3.0);
    check(-2.0, std::nullopt);
    check(std::nullopt, 3.0);
    check(5.0, 1.0);  // lo > hi gives hi
  }
  Tensor f = tensor({NAN, 1.0, -5.0});
  std::vector<double> r = native::clamp(f, 0.0, 2.0).to_vector<double>();
  EXPECT_TRUE(std::isnan(r[0]));
  EXPECT_EQ(r[1], 1.0);
  EXPECT_EQ(r[2], 0.0);
  EXPECT_TRUE(std::isnan(native::clamp(f, NAN, std::nullopt).to_vector<double>()[1]));
  // u8 bounds saturate; a fractional bound on integers gives a floating result.
  Tensor u = native::to(tensor({0, 100, 255}), Device::cpu(), DType::u8);
  EXPECT_EQ(native::clamp(u, -5.0, 300.0).to_vector<int64_t>(), (std::vector<int64_t>{0, 100, 255}));
  Tensor ci = native::clamp(tensor({1, 5}), 1.5, std::nullopt);
  EXPECT_EQ(ci.dtype(), DType::f32);
  EXPECT_EQ(ci.to_vector<double>(), (std::vector<double>{1.5, 5.0}));
  EXPECT_THROW(native::clamp(f, std::nullopt, std::nullopt), ValueError);
}

TEST(ElementwiseAddScaled, MatchesReference) {
  for (DType t : {DType::f64, DType::f32, DType::f16, DType::bf16, DType::i64, DType::i32}) {
    Tensor x = random_tensor({6, 45}, t, -9, 9), y = random_tensor({45}, t, -9, 9);
    double alpha = is_floating(t) ? -0.37 : 3.0;
    Tensor out = native::add_scaled(x, y, alpha);
    std::vector<double> xv = x.to_vector<double>(),
                        yv = native::expand(y, {6, 45}).to_vector<double>(), want(xv.size());
    double at = is_floating(t) ? round_to(alpha, is_low_precision(t) ? DType::f32 : t) : alpha;
    for (size_t i = 0; i < xv.size(); ++i) want[i] = xv[i] + at * yv[i];
    expect_close(out.to_vector<double>(), want, t, dtype_name(t).data());
  }
  EXPECT_THROW(native::add_scaled(zeros({2}, DType::i64), zeros({2}, DType::i64), 0.5), ValueError);
}

// Note [Meta tensors]: shapes and dtypes come out right, and nothing is allocated.
TEST(ElementwiseMeta, ShapesDtypesAndNoAllocation) {
  Device m = Device::meta();
  Tensor a = native::empty({1000, 1, 300}, DType::f16, m);
  Tensor b = native::empty({400, 1}, DType::f32, m);
  Tensor i = native::empty({1000, 400, 300}, DType::i64, m);
  Tensor c = native::empty({400, 300}, DType::bool_, m);
  int64_t before = memory_stats().current_bytes;
  int64_t allocs = memory_stats().num_allocs;
  Tensor s = native::binary(BinaryOp::add, a, b);
  EXPECT_TRUE(s.is_meta());
  EXPECT_EQ(s.sizes(), (Shape{1000, 400, 300}));
  EXPECT_EQ(s.dtype(), DType::f32);
  EXPECT_EQ(native::binary(BinaryOp::lt, a, b).dtype(), DType::bool_);
  EXPECT_EQ(native::binary(BinaryOp::div, i, i).dtype(), DType::f32);
  EXPECT_EQ(native::binary(BinaryOp::mul, a, native::wrap_scalar(3.0, a)).dtype(), DType::f16);
  EXPECT_TRUE(native::wrap_scalar(3.0, a).is_meta());
  native::binary_(BinaryOp::mul, i, native::wrap_scalar(2, i));
  EXPECT_EQ(native::unary(UnaryOp::exp, i).dtype(), DType::f32);
  EXPECT_EQ(native::unary(UnaryOp::logical_not, a).dtype(), DType::bool_);
  Tensor gb = native::unary_backward(UnaryOp::gelu_erf, s, s, Tensor());
  EXPECT_EQ(gb.sizes(), s.sizes());
  EXPECT_TRUE(gb.is_meta());
  Tensor w = native::where(c, a, b);
  EXPECT_EQ(w.sizes(), (Shape{1000, 400, 300}));
  EXPECT_EQ(native::masked_fill(i, c, 1.0).dtype(), DType::i64);
  EXPECT_EQ(native::clamp(i, 0.5, std::nullopt).dtype(), DType::f32);
  EXPECT_EQ(native::add_scaled(a, b, 2.0).sizes(), (Shape{1000, 400, 300}));
  EXPECT_EQ(memory_stats().current_bytes, before);
  EXPECT_EQ(memory_stats().num_allocs, allocs);
  // Meta mixed with real tensors is an error, not a silent meta result.
  try {
    native::binary(BinaryOp::add, a, zeros({400, 1}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("add: operands are on different devices"));
  }
}

TEST(ElementwiseErrors, IncompatibleShapesNameOpAndShapes) {
  try {
    native::binary(BinaryOp::mul, zeros({2, 3}), zeros({4}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("mul: shapes [2, 3] and [4] cannot be broadcast"));
  }
  try {
    native::where(zeros({3}, DType::bool_), zeros({2, 3}), zeros({5, 1, 1}));
    native::where(zeros({4}, DType::bool_), zeros({2, 3}), zeros({3}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("where: shapes"));
  }
  try {
    native::unary_backward(UnaryOp::tanh, zeros({3}), Tensor(), zeros({4}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("tanh_backward: grad_out of shape [3] does not match"));
  }
  EXPECT_THROW(native::binary(BinaryOp::add, zeros({2}), Tensor()), ValueError);
}

TEST(ElementwiseEmpty, ZeroElementTensors) {
  Tensor e = zeros({0, 5});
  EXPECT_EQ(native::binary(BinaryOp::add, e, zeros({5})).sizes(), (Shape{0, 5}));
  EXPECT_EQ(native::unary(UnaryOp::exp, e).numel(), 0);
  native::binary_(BinaryOp::add, e, zeros({5}));
}

}  // namespace
}  // namespace loom
