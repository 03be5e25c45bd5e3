// Elementwise op front-ends: broadcasting, result dtypes, meta handling, then one kernel call
// from the tables of kernels/cpu/elementwise.h.
//
// Inputs are converted to the compute dtype here (a whole-tensor conversion, only when an
// operand's dtype differs, e.g. i64 / i64 or f16 + f32) and broadcast as stride-0 views;
// kernels see one dtype and one shape. Deliberately not here: autograd (autograd/ wraps
// these) and any math.
//
// Note [Result dtype]: tensor-tensor arithmetic follows promote_types, except that a 0-dim
// operand does not raise the dtype of a dimensioned operand of the same or a higher
// category (bool < integer < floating), as in PyTorch: f16 (N) * f64 () is f16, but
// i64 (N) * f32 () is f32. wrap_scalar builds the 0-dim operand for a C++ number:
//  - a floating `like` gives the scalar like's dtype (so f16 * 2.0 stays f16, computed in
//    f32 per block like every f16 op; the scalar itself is rounded to f16 first, which
//    PyTorch avoids by keeping it in f32 -- a difference of at most one f16 ulp of it);
//  - an integral value with an integer `like` gives like's dtype (u8 + 1 stays u8, i32 * 2
//    stays i32, as PyTorch) when it fits that dtype, else i64 (which, being 0-dim, still
//    leaves the result in like's dtype: u8 + 300 wraps like PyTorch's); a bool `like`, i64;
//  - a fractional value with an integral `like` gives the default dtype (i64 * 0.5 is f32).
// Integer division is true division (PyTorch's `/`): the result has the default dtype.
#include <cmath>

#include "kernels/cpu/elementwise.h"
#include "tensor/defaults.h"
#include "tensor/native.h"

namespace loom::native {

namespace kc = kernels::cpu;

// The kernel enums mirror the public ones member for member.
static_assert(int(BinaryOp::ge) == int(kc::BinaryKind::ge) &&
              int(BinaryOp::pow) == int(kc::BinaryKind::pow) &&
              int(BinaryOp::eq) == int(kc::BinaryKind::eq));
static_assert(int(UnaryOp::logical_not) == int(kc::UnaryKind::logical_not) &&
              int(UnaryOp::gelu_erf) == int(kc::UnaryKind::gelu_erf) &&
              int(UnaryOp::relu) == int(kc::UnaryKind::relu));

namespace {

kc::BinaryKind kind(BinaryOp op) { return static_cast<kc::BinaryKind>(op); }
kc::UnaryKind kind(UnaryOp op) { return static_cast<kc::UnaryKind>(op); }

const char* op_name(BinaryOp op) {
  static constexpr const char* kNames[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum",
                                           "eq",  "ne",  "lt",  "le",  "gt",  "ge"};
  return kNames[int(op)];
}
const char* op_name(UnaryOp op) {
  static constexpr const char* kNames[] = {"neg", "exp", "log", "sqrt", "rsqrt", "abs", "tanh",
                                           "sigmoid", "relu", "gelu_tanh", "gelu_erf", "square",
                                           "sign", "logical_not"};
  return kNames[int(op)];
}

int category(DType t) { return t == DType::bool_ ? 0 : is_floating(t) ? 2 : 1; }

// Note [Result dtype].
DType result_dtype(const Tensor& a, const Tensor& b) {
  bool za = a.dim() == 0, zb = b.dim() == 0;
  if (za == zb) return promote_types(a.dtype(), b.dtype());
  DType dim_t = za ? b.dtype() : a.dtype(), zero_t = za ? a.dtype() : b.dtype();
  return category(zero_t) > category(dim_t) ? promote_types(dim_t, zero_t) : dim_t;
}

// The device all operands share; throws on undefined operands and on a meta/cpu mix (a meta
// operand has no values to compute with, and silently returning meta would hide the bug).
Device common_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) throw ValueError(detail::concat(op, ": an operand is an undefined tensor"));
    if (!first) {
      first = t;
    } else if (t->device() != first->device()) {
      throw ValueError(detail::concat(
          op, ": operands are on different devices (", first->device(), " with shape ",
          shape_str(first->sizes()), " and ", t->device(), " with shape ", shape_str(t->sizes()),
          "); move them to one device first"));
    }
  }
  return first->device();
}

// The kernel's view of an operand broadcast to `shape` (t must already be broadcastable;
// the expanded view keeps strides alive for the call).
struct Operand {
  Tensor view;
  kc::StridedArg arg() const { return {view.raw_data_ptr(), view.strides().data()}; }
};
Operand operand(const Tensor& t, const Shape& shape, DType dtype) {
  Tensor c = to(t, t.device(), dtype);
  return {c.sizes() == shape ? c : expand(c, shape)};
}
kc::StridedArg out_arg(const Tensor& out) {
  return {out.raw_data_ptr(), out.strides().data()};
}

// Rejections shared by the meta and real paths, so that both fail the same way.
void check_binary_dtype(BinaryOp op, DType compute, const char* name) {
  if (compute == DType::bool_ && (op == BinaryOp::sub || op == BinaryOp::pow))
    throw ValueError(detail::concat(name, ": not supported for bool tensors",
                                    op == BinaryOp::sub ? "; use logical ops (ne) instead"
                                                        : "; convert to an integer dtype first"));
}

// The dtype binary(op, a, b) computes in, and the one it returns.
std::pair<DType, DType> binary_dtypes(BinaryOp op, const Tensor& a, const Tensor& b) {
  DType compute = result_dtype(a, b);
  if (op == BinaryOp::div && !is_floating(compute)) compute = default_dtype();
  check_binary_dtype(op, compute, op_name(op));
  DType out = kc::is_comparison(kind(op)) ? DType::bool_ : compute;
  return {compute, out};
}

bool has_internal_overlap(const Tensor& t) {
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.sizes()[d] > 1 && t.strides()[d] == 0) return true;
  return false;
}

// A `b` that can be read while `a` is written in the same pass: another storage, or exactly
// the same elements (a += a). Anything else (a -= a[0], a += a.t()) is computed out of place.
bool safe_to_alias(const Tensor& a, const Tensor& b) {
  if (a.storage() != b.storage()) return true;
  return a.storage_offset() == b.storage_offset() && a.sizes() == b.sizes() &&
         a.strides() == b.strides();
}

}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = op_name(op);
  Device device = common_device(name, {&a, &b});
  Shape shape = broadcast_shapes(a.sizes(), b.sizes(), name);
  auto [compute, out_dtype] = binary_dtypes(op, a, b);
  Tensor out = empty(shape, out_dtype, device);
  if (device.is_meta() || out.numel() == 0) return out;
  auto fn = kc::binary_kernels().get(device.type, compute, name);
  Operand x = operand(a, shape, compute), y = operand(b, shape, compute);
  fn(kind(op), out.dim(), shape.data(), out_arg(out), x.arg(), y.arg());
  return out;
}

void binary_(BinaryOp op, const Tensor& a, const Tensor& b) {
  std::string name = std::string(op_name(op)) + "_";
  Device device = common_device(name.c_str(), {&a, &b});
  Shape shape = broadcast_shapes(a.sizes(), b.sizes(), name.c_str());
  if (shape != a.sizes())
    throw ValueError(detail::concat(name, ": the result shape ", shape_str(shape),
                                    " of broadcasting ", shape_str(a.sizes()), " and ",
                                    shape_str(b.sizes()),
                                    " differs from the in-place operand's shape ",
                                    shape_str(a.sizes()), "; use the out-of-place op"));
  auto [compute, out_dtype] = binary_dtypes(op, a, b);
  // PyTorch's can_cast: no floating result into an integer tensor, no number into bool.
  if ((is_floating(out_dtype) && !is_floating(a.dtype())) ||
      (a.dtype() == DType::bool_ && out_dtype != DType::bool_))
    throw ValueError(detail::concat(name, ": the result dtype ", out_dtype,
                                    " can't be cast to the in-place operand's dtype ", a.dtype(),
                                    "; use the out-of-place op"));
  if (has_internal_overlap(a))
    throw ValueError(detail::concat(name, ": the in-place operand of shape ", shape_str(a.sizes()),
                                    " has several elements at one memory location (an expanded "
                                    "view); clone() it first"));
  if (device.is_meta() || a.numel() == 0) {
    a.storage()->bump_version();
    return;
  }
  if (out_dtype != a.dtype() || compute != a.dtype() || !safe_to_alias(a, b)) {
    copy_(a, binary(op, a, b));  // copy_ bumps the version
    return;
  }
  auto fn = kc::binary_kernels().get(device.type, compute, name);
  Operand y = operand(b, shape, compute);
  a.storage()->bump_version();
  fn(kind(op), a.dim(), shape.data(), out_arg(a), out_arg(a), y.arg());
}

Tensor wrap_scalar(Scalar value, const Tensor& like) {
  auto fits = [&](double lo, double hi) {
    return std::isfinite(value) && value == std::trunc(value) && value >= lo && value < hi;
  };
  DType dtype;
  if (is_floating(like.dtype()))
    dtype = like.dtype();
  else if (like.dtype() == DType::u8 && fits(0, 256))
    dtype = DType::u8;
  else if (like.dtype() == DType::i32 && fits(-2147483648.0, 2147483648.0))
    dtype = DType::i32;
  else if (fits(-9223372036854775808.0, 9223372036854775808.0))
    dtype = DType::i64;  // also a value beyond a u8/i32 tensor's range: promote, don't wrap
  else
    dtype = default_dtype();
  // Note [Result dtype]: the 0-dim operand lives on like's device (meta stays meta).
  Tensor t = empty({}, dtype, like.device());
  if (!t.is_meta()) fill_(t, value);
  return t;
}

Tensor unary(UnaryOp op, const Tensor& x) {
  const char* name = op_name(op);
  Device device = common_device(name, {&x});
  if (x.dtype() == DType::bool_ && !kc::is_floating_only(kind(op)) && op != UnaryOp::logical_not)
    throw ValueError(detail::concat(name, ": not supported for bool tensors",
                                    op == UnaryOp::neg ? "; use logical_not instead"
                                                       : "; convert to an integer dtype first"));
  DType compute = kc::is_floating_only(kind(op)) && !is_floating(x.dtype()) ? default_dtype()
                                                                            : x.dtype();
  Tensor out = empty(x.sizes(), op == UnaryOp::logical_not ? DType::bool_ : compute, device);
  if (device.is_meta() || out.numel() == 0) return out;
  auto fn = kc::unary_kernels().get(device.type, compute, name);
  Operand in = operand(x, x.sizes(), compute);
  fn(kind(op), out.dim(), out.sizes().data(), out_arg(out), in.arg());
  return out;
}

static_assert(int(UnaryBackwardReads::nothing) == int(kc::BackwardInput::none) &&
              int(UnaryBackwardReads::input) == int(kc::BackwardInput::x) &&
              int(UnaryBackwardReads::output) == int(kc::BackwardInput::out));

UnaryBackwardReads unary_backward_reads(UnaryOp op) {
  return static_cast<UnaryBackwardReads>(kc::backward_input(kind(op)));
}

Tensor unary_backward(UnaryOp op, const Tensor& grad_out, const Tensor& x, const Tensor& out) {
  std::string name = std::string(op_name(op)) + "_backward";
  if (op == UnaryOp::logical_not)
    throw ValueError("logical_not_backward: logical_not is not differentiable");
  kc::BackwardInput which = kc::backward_input(kind(op));
  if (which == kc::BackwardInput::out && !out.defined())
    throw ValueError(detail::concat(name, ": needs the forward output `out` (got undefined)"));
  if (which == kc::BackwardInput::x && !x.defined())
    throw ValueError(detail::concat(name, ": needs the forward input `x` (got undefined)"));
  const Tensor& saved = which == kc::BackwardInput::out ? out
                        : which == kc::BackwardInput::x ? x
                                                        : grad_out;
  Device device = common_device(name.c_str(), {&grad_out, &saved});
  if (grad_out.sizes() != saved.sizes())
    throw ValueError(detail::concat(name, ": grad_out of shape ", shape_str(grad_out.sizes()),
                                    " does not match the saved ",
                                    which == kc::BackwardInput::out ? "output" : "input",
                                    " of shape ", shape_str(saved.sizes())));
  DType compute = promote_types(grad_out.dtype(), saved.dtype());
  if (!is_floating(compute)) compute = default_dtype();
  Tensor grad_in = empty(grad_out.sizes(), compute, device);
  if (device.is_meta() || grad_in.numel() == 0) return grad_in;
  auto fn = kc::unary_backward_kernels().get(device.type, compute, name);
  Operand g = operand(grad_out, grad_out.sizes(), compute);
  Operand s = operand(saved, saved.sizes(), compute);
  fn(kind(op), grad_in.dim(), grad_in.sizes().data(), out_arg(grad_in), g.arg(), s.arg());
  return grad_in;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Device device = common_device("where", {&cond, &a, &b});
  if (cond.dtype() != DType::bool_)
    throw ValueError(detail::concat("where: the condition must be bool, got ", cond.dtype(),
                                    "; compare it first (e.g. ne(cond, 0))"));
  Shape shape = broadcast_shapes(cond.sizes(), broadcast_shapes(a.sizes(), b.sizes(), "where"),
                                 "where");
  DType dtype = result_dtype(a, b);
  Tensor out = empty(shape, dtype, device);
  if (device.is_meta() || out.numel() == 0) return out;
  auto fn = kc::where_kernels().get(device.type, dtype, "where");
  Operand c = operand(cond, shape, DType::bool_);
  Operand x = operand(a, shape, dtype), y = operand(b, shape, dtype);
  fn(out.dim(), shape.data(), out_arg(out), c.arg(), x.arg(), y.arg());
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, Scalar value) {
  Device device = common_device("masked_fill", {&x, &mask});
  if (mask.dtype() != DType::bool_)
    throw ValueError(detail::concat("masked_fill: the mask must be bool, got ", mask.dtype()));
  Shape shape = broadcast_shapes(x.sizes(), mask.sizes(), "masked_fill");
  if (shape != x.sizes())
    throw ValueError(detail::concat("masked_fill: the mask of shape ", shape_str(mask.sizes()),
                                    " does not broadcast to the input's shape ",
                                    shape_str(x.sizes())));
  Tensor out = empty(x.sizes(), x.dtype(), device);
  if (device.is_meta() || out.numel() == 0) return out;
  // where(mask, value, x) with the value as a 0-dim operand of x's dtype (stride 0 everywhere).
  auto fn = kc::where_kernels().get(device.type, x.dtype(), "masked_fill");
  Tensor v = empty({}, x.dtype(), device);
  fill_(v, value);
  Operand c = operand(mask, shape, DType::bool_);
  Operand fill = operand(v, shape, x.dtype()), in = operand(x, shape, x.dtype());
  fn(out.dim(), shape.data(), out_arg(out), c.arg(), fill.arg(), in.arg());
  return out;
}

Tensor clamp(const Tensor& x, std::optional<Scalar> lo, std::optional<Scalar> hi) {
  Device device = common_device("clamp", {&x});
  if (!lo && !hi) throw ValueError("clamp: at least one of lo and hi must be given");
  if (x.dtype() == DType::bool_)
    throw ValueError("clamp: not supported for bool tensors; convert to an integer dtype first");
  auto fractional = [](std::optional<Scalar> v) { return v && *v != std::trunc(*v); };
  // As PyTorch: an integer tensor clamped at a fractional bound gives a floating result.
  DType dtype = !is_floating(x.dtype()) && (fractional(lo) || fractional(hi)) ? default_dtype()
                                                                             : x.dtype();
  Tensor out = empty(x.sizes(), dtype, device);
  if (device.is_meta() || out.numel() == 0) return out;
  auto fn = kc::clamp_kernels().get(device.type, dtype, "clamp");
  Operand in = operand(x, x.sizes(), dtype);
  fn(out.dim(), out.sizes().data(), out_arg(out), in.arg(), lo.has_value(), lo.value_or(0.0),
     hi.has_value(), hi.value_or(0.0));
  return out;
}

Tensor add_scaled(const Tensor& x, const Tensor& y, Scalar alpha) {
  Device device = common_device("add_scaled", {&x, &y});
  Shape shape = broadcast_shapes(x.sizes(), y.sizes(), "add_scaled");
  DType dtype = result_dtype(x, y);
  if (!is_floating(dtype) && alpha != std::trunc(alpha))
    throw ValueError(detail::concat("add_scaled: alpha ", alpha, " must be integral for ", dtype,
                                    " operands"));
  Tensor out = empty(shape, dtype, device);
  if (device.is_meta() || out.numel() == 0) return out;
  auto fn = kc::add_scaled_kernels().get(device.type, dtype, "add_scaled");
  Operand a = operand(x, shape, dtype), b = operand(y, shape, dtype);
  fn(out.dim(), shape.data(), out_arg(out), a.arg(), b.arg(), alpha);
  return out;
}

}  // namespace loom::native
