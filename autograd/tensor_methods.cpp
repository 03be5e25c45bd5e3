// Tensor's math methods and operators (forwarding to the ops of autograd/functions_*.cpp),
// and the in-place writes, which autograd does not record and therefore guards.
#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace loom {

using native::BinaryOp;

namespace {

Tensor scalar_like(Scalar v, const Tensor& t) { return native::wrap_scalar(v, t); }

// In-place writes are not recorded, so they would silently corrupt gradients of a tensor
// that takes part in a graph: refuse them while grad mode is on.
void check_inplace(const Tensor& t, const char* op) {
  if (GradMode::is_enabled() && t.requires_grad())
    throw RuntimeError(detail::concat(
        op, ": in-place write to a tensor that requires grad (", t.is_leaf() ? "a leaf" : "a graph output",
        " of shape ", shape_str(t.sizes()),
        "); use the out-of-place op, or do it under NoGradGuard (as optimizers and init do)"));
}

}  // namespace

Tensor Tensor::add(const Tensor& o, Scalar alpha) const { return loom::add(*this, o, alpha); }
Tensor Tensor::sub(const Tensor& o, Scalar alpha) const { return loom::sub(*this, o, alpha); }
Tensor Tensor::mul(const Tensor& o) const { return loom::mul(*this, o); }
Tensor Tensor::div(const Tensor& o) const { return loom::div(*this, o); }
Tensor Tensor::pow(Scalar e) const { return loom::pow(*this, e); }
Tensor Tensor::pow(const Tensor& e) const { return loom::pow(*this, e); }
Tensor Tensor::neg() const { return loom::neg(*this); }
Tensor Tensor::exp() const { return loom::exp(*this); }
Tensor Tensor::log() const { return loom::log(*this); }
Tensor Tensor::sqrt() const { return loom::sqrt(*this); }
Tensor Tensor::rsqrt() const { return loom::rsqrt(*this); }
Tensor Tensor::abs() const { return loom::abs(*this); }
Tensor Tensor::tanh() const { return loom::tanh(*this); }
Tensor Tensor::sigmoid() const { return loom::sigmoid(*this); }
Tensor Tensor::relu() const { return loom::relu(*this); }
Tensor Tensor::gelu(bool tanh_approximation) const { return loom::gelu(*this, tanh_approximation); }
Tensor Tensor::square() const { return loom::mul(*this, *this); }
Tensor Tensor::maximum(const Tensor& o) const { return loom::maximum(*this, o); }
Tensor Tensor::minimum(const Tensor& o) const { return loom::minimum(*this, o); }
Tensor Tensor::clamp(std::optional<Scalar> lo, std::optional<Scalar> hi) const {
  return loom::clamp(*this, lo, hi);
}
Tensor Tensor::masked_fill(const Tensor& mask, Scalar value) const {
  return loom::masked_fill(*this, mask, value);
}

Tensor Tensor::eq(const Tensor& o) const { return native::binary(BinaryOp::eq, *this, o); }
Tensor Tensor::ne(const Tensor& o) const { return native::binary(BinaryOp::ne, *this, o); }
Tensor Tensor::lt(const Tensor& o) const { return native::binary(BinaryOp::lt, *this, o); }
Tensor Tensor::le(const Tensor& o) const { return native::binary(BinaryOp::le, *this, o); }
Tensor Tensor::gt(const Tensor& o) const { return native::binary(BinaryOp::gt, *this, o); }
Tensor Tensor::ge(const Tensor& o) const { return native::binary(BinaryOp::ge, *this, o); }
Tensor Tensor::eq(Scalar o) const { return eq(scalar_like(o, *this)); }
Tensor Tensor::lt(Scalar o) const { return lt(scalar_like(o, *this)); }
Tensor Tensor::gt(Scalar o) const { return gt(scalar_like(o, *this)); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, Scalar b) { return add(a, scalar_like(b, a)); }
Tensor operator-(const Tensor& a, Scalar b) { return sub(a, scalar_like(b, a)); }
Tensor operator*(const Tensor& a, Scalar b) { return mul(a, scalar_like(b, a)); }
Tensor operator/(const Tensor& a, Scalar b) { return div(a, scalar_like(b, a)); }
Tensor operator+(Scalar a, const Tensor& b) { return add(scalar_like(a, b), b); }
Tensor operator-(Scalar a, const Tensor& b) { return sub(scalar_like(a, b), b); }
Tensor operator*(Scalar a, const Tensor& b) { return mul(scalar_like(a, b), b); }
Tensor operator/(Scalar a, const Tensor& b) { return div(scalar_like(a, b), b); }
Tensor& operator+=(Tensor& a, const Tensor& b) { return a.add_(b); }
Tensor& operator-=(Tensor& a, const Tensor& b) { return a.sub_(b); }
Tensor& operator*=(Tensor& a, const Tensor& b) { return a.mul_(b); }
Tensor& operator/=(Tensor& a, const Tensor& b) { return a.div_(b); }

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  native::copy_(*this, src);
  return *this;
}
Tensor& Tensor::fill_(Scalar value) {
  check_inplace(*this, "fill_");
  native::fill_(*this, value);
  return *this;
}
Tensor& Tensor::zero_() { return fill_(0.0); }
Tensor& Tensor::add_(const Tensor& o, Scalar alpha) {
  check_inplace(*this, "add_");
  if (alpha == 1.0)
    native::binary_(BinaryOp::add, *this, o);
  else
    native::binary_(BinaryOp::add, *this, native::binary(BinaryOp::mul, o, scalar_like(alpha, o)));
  return *this;
}
Tensor& Tensor::add_(Scalar o) { return add_(scalar_like(o, *this)); }
Tensor& Tensor::sub_(const Tensor& o, Scalar alpha) { return add_(o, -alpha); }
Tensor& Tensor::mul_(const Tensor& o) {
  check_inplace(*this, "mul_");
  native::binary_(BinaryOp::mul, *this, o);
  return *this;
}
Tensor& Tensor::mul_(Scalar o) { return mul_(scalar_like(o, *this)); }
Tensor& Tensor::div_(const Tensor& o) {
  check_inplace(*this, "div_");
  native::binary_(BinaryOp::div, *this, o);
  return *this;
}
Tensor& Tensor::div_(Scalar o) { return div_(scalar_like(o, *this)); }
Tensor& Tensor::clamp_(std::optional<Scalar> lo, std::optional<Scalar> hi) {
  check_inplace(*this, "clamp_");
  native::copy_(*this, native::clamp(*this, lo, hi));
  return *this;
}
Tensor& Tensor::uniform_(double lo, double hi) {
  check_inplace(*this, "uniform_");
  fill_uniform(*this, lo, hi);
  return *this;
}
Tensor& Tensor::normal_(double mean, double std) {
  check_inplace(*this, "normal_");
  fill_normal(*this, mean, std);
  return *this;
}

}  // namespace loom
