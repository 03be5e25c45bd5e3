// Differentiable elementwise ops: each forward (a native op) next to its backward.
//
// Backward lambdas return gradients in the output's shape and dtype; the engine sums them
// over broadcast dims and casts them to each input's dtype (autograd/engine.cpp), so the
// formulas below stay the textbook ones.
#include "autograd/node.h"
#include "tensor/ops.h"

namespace loom {

using autograd::record;
using autograd::SavedTensor;
using native::BinaryOp;
using native::UnaryOp;

namespace {

Tensor bin(BinaryOp op, const Tensor& a, const Tensor& b) { return native::binary(op, a, b); }
Tensor scal(Scalar v, const Tensor& like) { return native::wrap_scalar(v, like); }
Tensor mul_scalar(const Tensor& g, Scalar v) { return bin(BinaryOp::mul, g, scal(v, g)); }
Tensor zeros_of(const Tensor& t) {
  Tensor z = native::empty_like(t);
  native::fill_(z, 0.0);
  return z;
}

// One-input ops whose backward the kernels provide (native::unary_backward).
// Saves only the tensor the backward reads (native::unary_backward_reads): exp, tanh,
// sigmoid, sqrt, rsqrt and relu keep their output, the others their input, neg and sign
// nothing, so a tensor no later op needs is freed as soon as the forward has read it.
Tensor unary_op(UnaryOp op, const char* name, const Tensor& x) {
  Tensor out = native::unary(op, x);
  if (autograd::needs_grad(x)) {
    const native::UnaryBackwardReads reads = native::unary_backward_reads(op);
    SavedTensor sx(reads == native::UnaryBackwardReads::input ? x : Tensor());
    SavedTensor so(reads == native::UnaryBackwardReads::output ? out : Tensor());
    record(name, {x}, out, [op, sx, so](const TensorList& g) {
      return TensorList{native::unary_backward(op, g[0], sx.unpack(), so.unpack())};
    });
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b, Scalar alpha) {
  Tensor out = alpha == 1.0 ? bin(BinaryOp::add, a, b) : native::add_scaled(a, b, alpha);
  if (autograd::needs_grad(a, b))
    record("AddBackward", {a, b}, out, [alpha](const TensorList& g) {
      return TensorList{g[0], alpha == 1.0 ? g[0] : mul_scalar(g[0], alpha)};
    });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b, Scalar alpha) {
  Tensor out = native::add_scaled(a, b, -alpha);
  if (autograd::needs_grad(a, b))
    record("SubBackward", {a, b}, out, [alpha](const TensorList& g) {
      return TensorList{g[0], mul_scalar(g[0], -alpha)};
    });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = bin(BinaryOp::mul, a, b);
  if (autograd::needs_grad(a, b)) {
    // Save only what the other input's gradient needs.
    SavedTensor sa(b.requires_grad() ? a : Tensor()), sb(a.requires_grad() ? b : Tensor());
    record("MulBackward", {a, b}, out, [sa, sb](const TensorList& g) {
      return TensorList{sb.defined() ? bin(BinaryOp::mul, g[0], sb.unpack()) : Tensor(),
                        sa.defined() ? bin(BinaryOp::mul, g[0], sa.unpack()) : Tensor()};
    });
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = bin(BinaryOp::div, a, b);
  if (autograd::needs_grad(a, b))
    record("DivBackward", {a, b}, out,
           [sb = SavedTensor(b), so = SavedTensor(out)](const TensorList& g) {
             // d(a/b)/da = 1/b;  d(a/b)/db = -a/b^2 = -out/b
             Tensor ga = bin(BinaryOp::div, g[0], sb.unpack());
             Tensor gb = native::unary(UnaryOp::neg, bin(BinaryOp::mul, ga, so.unpack()));
             return TensorList{ga, gb};
           });
  return out;
}

Tensor pow(const Tensor& a, Scalar exponent) {
  Tensor out = bin(BinaryOp::pow, a, scal(exponent, a));
  if (autograd::needs_grad(a))
    record("PowBackward", {a}, out, [exponent, sa = SavedTensor(a)](const TensorList& g) {
      // d(x^p)/dx = p * x^(p-1); exactly 0 for p = 0, also at x = 0 (not 0 * inf = NaN).
      if (exponent == 0.0) return TensorList{zeros_of(g[0])};
      Tensor x = sa.unpack();
      Tensor d = mul_scalar(bin(BinaryOp::pow, x, scal(exponent - 1.0, x)), exponent);
      return TensorList{bin(BinaryOp::mul, g[0], d)};
    });
  return out;
}

Tensor pow(const Tensor& a, const Tensor& exponent) {
  Tensor out = bin(BinaryOp::pow, a, exponent);
  if (autograd::needs_grad(a, exponent))
    record("PowBackward", {a, exponent}, out,
           [sa = SavedTensor(a), se = SavedTensor(exponent), so = SavedTensor(out)](
               const TensorList& g) {
             // d(a^b)/da = b * a^(b-1);  d(a^b)/db = a^b * log(a). As PyTorch, the first is 0
             // where b = 0 and the second 0 where a = 0 and b >= 0 (not 0 * inf = NaN there).
             Tensor x = sa.unpack(), e = se.unpack();
             Tensor em1 = bin(BinaryOp::sub, e, scal(1.0, e));
             Tensor ga = bin(BinaryOp::mul, g[0], bin(BinaryOp::mul, e, bin(BinaryOp::pow, x, em1)));
             Tensor gb = bin(BinaryOp::mul, g[0],
                             bin(BinaryOp::mul, so.unpack(), native::unary(UnaryOp::log, x)));
             Tensor zero = scal(0.0, g[0]);
             ga = native::where(bin(BinaryOp::eq, e, scal(0.0, e)), zero, ga);
             Tensor base_zero = bin(BinaryOp::eq, x, scal(0.0, x));
             gb = native::where(base_zero, native::where(bin(BinaryOp::ge, e, scal(0.0, e)), zero, gb),
                                gb);
             return TensorList{ga, gb};
           });
  return out;
}

Tensor neg(const Tensor& x) { return unary_op(UnaryOp::neg, "NegBackward", x); }
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::exp, "ExpBackward", x); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::log, "LogBackward", x); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::sqrt, "SqrtBackward", x); }
Tensor rsqrt(const Tensor& x) { return unary_op(UnaryOp::rsqrt, "RsqrtBackward", x); }
Tensor abs(const Tensor& x) { return unary_op(UnaryOp::abs, "AbsBackward", x); }
Tensor tanh(const Tensor& x) { return unary_op(UnaryOp::tanh, "TanhBackward", x); }
Tensor sigmoid(const Tensor& x) { return unary_op(UnaryOp::sigmoid, "SigmoidBackward", x); }
Tensor relu(const Tensor& x) { return unary_op(UnaryOp::relu, "ReluBackward", x); }
Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return unary_op(tanh_approximation ? UnaryOp::gelu_tanh : UnaryOp::gelu_erf, "GeluBackward", x);
}

// Ties send half the gradient to each side, as PyTorch.
static Tensor extremum(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  Tensor out = bin(op, a, b);
  if (autograd::needs_grad(a, b))
    record(name, {a, b}, out, [op, sa = SavedTensor(a), sb = SavedTensor(b)](const TensorList& g) {
      Tensor x = sa.unpack(), y = sb.unpack();
      Tensor a_wins = bin(op == BinaryOp::maximum ? BinaryOp::gt : BinaryOp::lt, x, y);
      Tensor tie = bin(BinaryOp::eq, x, y);
      Tensor half = mul_scalar(g[0], 0.5);
      Tensor zero = zeros_of(g[0]);
      Tensor ga = native::where(a_wins, g[0], native::where(tie, half, zero));
      Tensor gb = bin(BinaryOp::sub, g[0], ga);
      return TensorList{ga, gb};
    });
  return out;
}
Tensor maximum(const Tensor& a, const Tensor& b) {
  return extremum(BinaryOp::maximum, "MaximumBackward", a, b);
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  return extremum(BinaryOp::minimum, "MinimumBackward", a, b);
}

Tensor clamp(const Tensor& x, std::optional<Scalar> lo, std::optional<Scalar> hi) {
  Tensor out = native::clamp(x, lo, hi);
  if (autograd::needs_grad(x))
    record("ClampBackward", {x}, out, [lo, hi, sx = SavedTensor(x)](const TensorList& g) {
      // Gradient passes where lo <= x <= hi.
      Tensor v = sx.unpack();
      Tensor pass = g[0];
      Tensor zero = zeros_of(g[0]);
      if (lo) pass = native::where(bin(BinaryOp::ge, v, scal(*lo, v)), pass, zero);
      if (hi) pass = native::where(bin(BinaryOp::le, v, scal(*hi, v)), pass, zero);
      return TensorList{pass};
    });
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Tensor out = native::where(cond, a, b);
  if (autograd::needs_grad(a, b))
    record("WhereBackward", {a, b}, out, [sc = SavedTensor(cond)](const TensorList& g) {
      Tensor c = sc.unpack(), zero = zeros_of(g[0]);
      return TensorList{native::where(c, g[0], zero), native::where(c, zero, g[0])};
    });
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, Scalar value) {
  Tensor out = native::masked_fill(x, mask, value);
  if (autograd::needs_grad(x))
    record("MaskedFillBackward", {x}, out, [sm = SavedTensor(mask)](const TensorList& g) {
      return TensorList{native::masked_fill(g[0], sm.unpack(), 0.0)};
    });
  return out;
}

}  // namespace loom
