// Cross-entropy front-ends: shape and target validation, the (N, C, D) view of the logits,
// meta handling, and the none/mean/sum reductions around the fused kernels
// (kernels/cpu/cross_entropy.h). Losses are accumulated in f32 (f64 for f64 logits) and
// rounded to the logits' dtype at the end, as the precision design asks of losses.
#include "kernels/cpu/cross_entropy.h"
#include "tensor/device_check.h"
#include "tensor/native.h"

namespace loom::native {

namespace {

// Logits viewed as (N, C, D) and the shape the per-position losses take.
struct CeShape {
  int64_t N = 1, C = 1, D = 1;
  Shape target_shape;
};

CeShape check_inputs(const Tensor& logits, const Tensor& target, double label_smoothing,
                     const char* op) {
  if (!is_floating(logits.dtype()))
    throw ValueError(detail::concat(op, ": logits must be floating, got ", logits.dtype(),
                                    "; convert with .to(DType::f32) first"));
  if (target.dtype() != DType::i64)
    throw ValueError(detail::concat(op, ": target must hold i64 class indices, got ",
                                    target.dtype(), "; convert with .to(DType::i64)"));
  if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
    throw ValueError(detail::concat(op, ": label_smoothing must be in [0, 1], got ",
                                    label_smoothing));
  if (logits.is_meta() != target.is_meta())
    throw ValueError(detail::concat(op, ": logits are on ", logits.device(),
                                    " but target is on ", target.device(),
                                    "; move both to one device"));
  CeShape s;
  const Shape& ls = logits.sizes();
  if (ls.empty())
    throw ValueError(detail::concat(op, ": logits must be (C), (N, C) or (N, C, d1, ...), got a "
                                        "0-dim tensor"));
  if (ls.size() == 1) {
    s.C = ls[0];
  } else {
    s.N = ls[0];
    s.C = ls[1];
    s.target_shape.push_back(ls[0]);
    for (size_t i = 2; i < ls.size(); ++i) {
      s.D *= ls[i];
      s.target_shape.push_back(ls[i]);
    }
  }
  if (s.C == 0) throw ValueError(detail::concat(op, ": logits ", shape_str(ls), " have no classes"));
  if (target.sizes() != s.target_shape)
    throw ValueError(detail::concat(op, ": target shape ", shape_str(target.sizes()),
                                    " does not match logits ", shape_str(ls), " (expected ",
                                    shape_str(s.target_shape), ")"));
  return s;
}

// Checks every target and counts those not ignored.
int64_t check_targets(const Tensor& target, int64_t C, int64_t ignore_index, const char* op) {
  const int64_t* t = target.data_ptr<int64_t>();
  int64_t n = target.numel(), count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore_index) continue;
    if (t[i] < 0 || t[i] >= C)
      throw ValueError(detail::concat(op, ": target ", t[i], " is out of bounds for C = ", C,
                                      " classes (valid: 0..", C - 1, ", or ignore_index ",
                                      ignore_index, ")"));
    ++count;
  }
  return count;
}

DType stat_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                     double label_smoothing, Reduction reduction) {
  const char* op = "cross_entropy";
  CeShape s = check_inputs(logits, target, label_smoothing, op);
  Shape out_shape = reduction == Reduction::none ? s.target_shape : Shape{};
  if (logits.is_meta()) return empty(out_shape, logits.dtype(), logits.device());
  check_cpu(logits, op);
  check_cpu(target, op);
  Tensor tgt = contiguous(target);
  int64_t count = check_targets(tgt, s.C, ignore_index, op);
  Tensor x = contiguous(logits);
  Tensor loss = empty(s.target_shape, stat_dtype(logits.dtype()), logits.device());
  if (loss.numel() > 0)
    kernels::cpu::cross_entropy_kernels().get(logits.device().type, logits.dtype(), op)(
        x.raw_data_ptr(), tgt.data_ptr<int64_t>(), loss.raw_data_ptr(), s.N, s.C, s.D,
        ignore_index, label_smoothing);
  if (reduction == Reduction::none) return to(loss, logits.device(), logits.dtype());
  Tensor total = sum(loss, {}, false);
  if (reduction == Reduction::sum) return to(total, logits.device(), logits.dtype());
  // mean over the non-ignored targets; all ignored gives 0 / 0 = NaN, as PyTorch.
  Tensor out = empty({}, logits.dtype(), logits.device());
  fill_(out, total.item<double>() / double(count));
  return out;
}

Tensor cross_entropy_backward(const Tensor& grad_out, const Tensor& logits, const Tensor& target,
                              int64_t ignore_index, double label_smoothing, Reduction reduction) {
  const char* op = "cross_entropy_backward";
  CeShape s = check_inputs(logits, target, label_smoothing, op);
  Shape grad_shape = reduction == Reduction::none ? s.target_shape : Shape{};
  if (grad_out.numel() != shape_numel(grad_shape) ||
      (reduction == Reduction::none && grad_out.sizes() != grad_shape))
    throw ValueError(detail::concat(op, ": grad_out has shape ", shape_str(grad_out.sizes()),
                                    " but the loss has shape ", shape_str(grad_shape)));
  if (grad_out.is_meta() != logits.is_meta())
    throw ValueError(detail::concat(op, ": grad_out is on ", grad_out.device(),
                                    " but logits are on ", logits.device(),
                                    "; move both to one device"));
  Tensor gx = empty(logits.sizes(), logits.dtype(), logits.device());
  if (logits.is_meta()) return gx;
  check_cpu(logits, op);
  check_cpu(target, op);
  check_cpu(grad_out, op);
  Tensor tgt = contiguous(target);
  int64_t count = check_targets(tgt, s.C, ignore_index, op);
  if (gx.numel() == 0) return gx;
  Tensor x = contiguous(logits);
  DType sd = stat_dtype(logits.dtype());
  Tensor g;
  int64_t stride = 0;
  if (reduction == Reduction::none) {
    g = contiguous(to(grad_out, logits.device(), sd));
    stride = 1;
  } else {
    double v = grad_out.item<double>();
    if (reduction == Reduction::mean) v /= double(count);
    g = empty({}, sd, logits.device());
    fill_(g, v);
  }
  kernels::cpu::cross_entropy_backward_kernels().get(logits.device().type, logits.dtype(), op)(
      x.raw_data_ptr(), tgt.data_ptr<int64_t>(), g.raw_data_ptr(), stride, gx.raw_data_ptr(),
      s.N, s.C, s.D, ignore_index, label_smoothing);
  return gx;
}

}  // namespace loom::native
