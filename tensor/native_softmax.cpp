// Softmax-family front-ends: dim wrapping, dtype checks, meta handling, and the (O, R, I)
// split the kernels take (kernels/cpu/softmax.h). Inputs are made contiguous first (a no-op
// for the usual contiguous activations); the output is contiguous with the input's shape.
#include "kernels/cpu/softmax.h"
#include "tensor/device_check.h"
#include "tensor/native.h"

namespace loom::native {

namespace {

void check_floating(const Tensor& t, const char* op) {
  if (!is_floating(t.dtype()))
    throw ValueError(detail::concat(op, ": expected a floating dtype, got ", t.dtype(),
                                    "; convert with .to(DType::f32) first"));
}

struct Split {
  int64_t O = 1, R = 1, I = 1;
};

Split split_at(const Shape& sizes, int64_t dim) {
  Split s;
  for (int64_t i = 0; i < int64_t(sizes.size()); ++i) {
    if (i < dim) s.O *= sizes[size_t(i)];
    else if (i == dim) s.R = sizes[size_t(i)];
    else s.I *= sizes[size_t(i)];
  }
  return s;
}

Tensor softmax_forward(const Tensor& x, int64_t dim, bool log, const char* op) {
  check_floating(x, op);
  int64_t d = wrap_dim(dim, x.dim(), op);
  Tensor out = empty(x.sizes(), x.dtype(), x.device());
  if (x.is_meta() || x.numel() == 0) return out;
  check_cpu(x, op);
  Tensor src = contiguous(x);
  Split s = split_at(x.sizes(), d);
  kernels::cpu::softmax_kernels().get(x.device().type, x.dtype(), op)(
      src.raw_data_ptr(), out.raw_data_ptr(), s.O, s.R, s.I, log);
  return out;
}

Tensor softmax_backward_impl(const Tensor& grad_out, const Tensor& out, int64_t dim, bool log,
                             const char* op) {
  check_floating(out, op);
  if (grad_out.sizes() != out.sizes())
    throw ValueError(detail::concat(op, ": grad_out ", shape_str(grad_out.sizes()),
                                    " and out ", shape_str(out.sizes()),
                                    " must have the same shape"));
  if (grad_out.is_meta() != out.is_meta())
    throw ValueError(detail::concat(op, ": grad_out is on ", grad_out.device(), " but out is on ",
                                    out.device(), "; move both to one device"));
  int64_t d = wrap_dim(dim, out.dim(), op);
  Tensor gx = empty(out.sizes(), out.dtype(), out.device());
  if (out.is_meta() || out.numel() == 0) return gx;
  check_cpu(out, op);
  check_cpu(grad_out, op);
  Tensor g = contiguous(to(grad_out, out.device(), out.dtype()));
  Tensor y = contiguous(out);
  Split s = split_at(out.sizes(), d);
  kernels::cpu::softmax_backward_kernels().get(out.device().type, out.dtype(), op)(
      g.raw_data_ptr(), y.raw_data_ptr(), gx.raw_data_ptr(), s.O, s.R, s.I, log);
  return gx;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_forward(x, dim, false, "softmax"); }

Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_forward(x, dim, true, "log_softmax");
}

Tensor softmax_backward(const Tensor& grad_out, const Tensor& out, int64_t dim) {
  return softmax_backward_impl(grad_out, out, dim, false, "softmax_backward");
}

Tensor log_softmax_backward(const Tensor& grad_out, const Tensor& out, int64_t dim) {
  return softmax_backward_impl(grad_out, out, dim, true, "log_softmax_backward");
}

}  // namespace loom::native
