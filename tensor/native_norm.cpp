// Layer-norm front-ends: normalized_shape checks, the (M, K) view, meta handling, and dtype
// handling of the statistics (kernels/cpu/layer_norm.h). mean and rstd have shape
// x.shape[:-k] and dtype f32 for 16-bit inputs (x's dtype otherwise); weight and bias are
// used in x's dtype and their gradients come back in their own dtype.
#include "kernels/cpu/layer_norm.h"
#include "tensor/device_check.h"
#include "tensor/native.h"

namespace loom::native {

namespace {

DType stat_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Validates x against normalized_shape and the affine parameters; returns (M, K).
std::pair<int64_t, int64_t> check_layer_norm(const Tensor& x, const Shape& normalized_shape,
                                             const Tensor& weight, const Tensor& bias,
                                             const char* op) {
  if (!is_floating(x.dtype()))
    throw ValueError(detail::concat(op, ": expected a floating input, got ", x.dtype(),
                                    "; convert with .to(DType::f32) first"));
  int64_t k = int64_t(normalized_shape.size()), n = x.dim();
  bool match = k <= n;
  for (int64_t i = 0; match && i < k; ++i)
    match = x.sizes()[size_t(n - k + i)] == normalized_shape[size_t(i)];
  if (!match)
    throw ValueError(detail::concat(op, ": normalized_shape ", shape_str(normalized_shape),
                                    " does not match the trailing dims of input ",
                                    shape_str(x.sizes())));
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    const char* name = p == &weight ? "weight" : "bias";
    if (p->sizes() != normalized_shape)
      throw ValueError(detail::concat(op, ": ", name, " has shape ", shape_str(p->sizes()),
                                      " but normalized_shape is ", shape_str(normalized_shape)));
    if (p->is_meta() != x.is_meta())
      throw ValueError(detail::concat(op, ": input is on ", x.device(), " but ", name, " is on ",
                                      p->device(), "; move both to one device"));
  }
  int64_t K = shape_numel(normalized_shape);
  return {K == 0 ? 0 : x.numel() / K, K};
}

Shape stat_shape(const Tensor& x, const Shape& normalized_shape) {
  return Shape(x.sizes().begin(), x.sizes().end() - int64_t(normalized_shape.size()));
}

// weight or bias as a contiguous tensor of x's dtype (null pointer when undefined).
const void* affine_ptr(const Tensor& p, DType dtype, Tensor& keep) {
  if (!p.defined()) return nullptr;
  keep = contiguous(to(p, p.device(), dtype));
  return keep.raw_data_ptr();
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> layer_norm(const Tensor& x, const Shape& normalized_shape,
                                              const Tensor& weight, const Tensor& bias,
                                              double eps) {
  const char* op = "layer_norm";
  auto [M, K] = check_layer_norm(x, normalized_shape, weight, bias, op);
  Shape ss = stat_shape(x, normalized_shape);
  Tensor out = empty(x.sizes(), x.dtype(), x.device());
  Tensor mean = empty(ss, stat_dtype(x.dtype()), x.device());
  Tensor rstd = empty(ss, stat_dtype(x.dtype()), x.device());
  if (x.is_meta() || out.numel() == 0) return {out, mean, rstd};
  check_cpu(x, op);
  check_cpu(weight, op);
  check_cpu(bias, op);
  Tensor src = contiguous(x), w, b;
  const void* wp = affine_ptr(weight, x.dtype(), w);
  const void* bp = affine_ptr(bias, x.dtype(), b);
  kernels::cpu::layer_norm_kernels().get(x.device().type, x.dtype(), op)(
      src.raw_data_ptr(), wp, bp, out.raw_data_ptr(), mean.raw_data_ptr(), rstd.raw_data_ptr(),
      M, K, eps);
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> layer_norm_backward(const Tensor& grad_out, const Tensor& x,
                                                       const Shape& normalized_shape,
                                                       const Tensor& mean, const Tensor& rstd,
                                                       const Tensor& weight, const Tensor& bias) {
  const char* op = "layer_norm_backward";
  auto [M, K] = check_layer_norm(x, normalized_shape, weight, bias, op);
  Shape ss = stat_shape(x, normalized_shape);
  if (grad_out.sizes() != x.sizes())
    throw ValueError(detail::concat(op, ": grad_out ", shape_str(grad_out.sizes()),
                                    " and input ", shape_str(x.sizes()),
                                    " must have the same shape"));
  if (mean.numel() != M || rstd.numel() != M)
    throw ValueError(detail::concat(op, ": mean ", shape_str(mean.sizes()), " and rstd ",
                                    shape_str(rstd.sizes()), " must have shape ", shape_str(ss)));
  for (const Tensor* t : {&grad_out, &mean, &rstd})
    if (t->is_meta() != x.is_meta())
      throw ValueError(detail::concat(op, ": input is on ", x.device(), " but another argument is on ",
                                      t->device(), "; move both to one device"));
  Tensor gx = empty(x.sizes(), x.dtype(), x.device());
  Tensor gw = weight.defined() ? empty(weight.sizes(), weight.dtype(), x.device()) : Tensor();
  Tensor gb = bias.defined() ? empty(bias.sizes(), bias.dtype(), x.device()) : Tensor();
  if (x.is_meta()) return {gx, gw, gb};
  check_cpu(x, op);
  check_cpu(grad_out, op);
  check_cpu(weight, op);
  DType sd = stat_dtype(x.dtype());
  Tensor gw_acc = weight.defined() ? empty(normalized_shape, sd, x.device()) : Tensor();
  Tensor gb_acc = bias.defined() ? empty(normalized_shape, sd, x.device()) : Tensor();
  if (M == 0 || K == 0) {  // nothing to normalise: every gradient is zero
    fill_(gx, 0);
    if (gw.defined()) fill_(gw, 0);
    if (gb.defined()) fill_(gb, 0);
    return {gx, gw, gb};
  }
  Tensor g = contiguous(to(grad_out, x.device(), x.dtype()));
  Tensor src = contiguous(x);
  Tensor mu = contiguous(to(mean, x.device(), sd));
  Tensor rs = contiguous(to(rstd, x.device(), sd));
  Tensor w;
  const void* wp = affine_ptr(weight, x.dtype(), w);
  kernels::cpu::layer_norm_backward_kernels().get(x.device().type, x.dtype(), op)(
      g.raw_data_ptr(), src.raw_data_ptr(), mu.raw_data_ptr(), rs.raw_data_ptr(), wp,
      gx.raw_data_ptr(), gw_acc.defined() ? gw_acc.raw_data_ptr() : nullptr,
      gb_acc.defined() ? gb_acc.raw_data_ptr() : nullptr, M, K);
  if (gw.defined()) copy_(gw, gw_acc);
  if (gb.defined()) copy_(gb, gb_acc);
  return {gx, gw, gb};
}

}  // namespace loom::native
