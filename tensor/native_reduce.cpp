// Reduction front-ends: dims and dtype rules, output shapes, meta handling, and the mapping
// of any reduction onto the kernels' contiguous (O, R, I) form (kernels/cpu/reduce.h).
//
// Layout (Note [Reduce layout]): a contiguous input whose reduced dims (ignoring dims of
// size 1) form one block is already (O, R, I) -- a row sum is I == 1, a column sum O == 1.
// Any other input is permuted so that the kept dims come first, in order, and the reduced
// ones last, then made contiguous: one copy, after which the kernel reduces rows (I == 1).
// Either way the kernel's (O, I) outputs are in the kept dims' order, i.e. the output's.
#include <algorithm>

#include "kernels/cpu/reduce.h"
#include "tensor/device_check.h"
#include "tensor/native.h"

namespace loom::native {

namespace {

struct ReducePlan {
  Shape out_shape;   // with or without the reduced dims, per keepdim
  Shape kept_shape;  // out_shape as if keepdim were true
  std::vector<bool> reduced;
  int64_t R = 1;  // elements reduced into each output
};

ReducePlan plan_reduce(const Tensor& x, const Shape& dims, bool keepdim, const char* op) {
  int64_t n = x.dim();
  ReducePlan p;
  p.reduced.assign(size_t(n), dims.empty());
  std::vector<bool> seen(size_t(std::max<int64_t>(n, 1)), false);
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, n, op);
    if (seen[size_t(w)])
      throw ValueError(detail::concat(op, ": dim ", w, " appears more than once in ",
                                      shape_str(dims)));
    seen[size_t(w)] = true;
    if (n > 0) p.reduced[size_t(w)] = true;
  }
  for (int64_t i = 0; i < n; ++i) {
    int64_t s = x.sizes()[size_t(i)];
    if (p.reduced[size_t(i)]) {
      p.R *= s;
      p.kept_shape.push_back(1);
      if (keepdim) p.out_shape.push_back(1);
    } else {
      p.kept_shape.push_back(s);
      p.out_shape.push_back(s);
    }
  }
  return p;
}

// The contiguous source and its (O, R, I) split for a plan (Note [Reduce layout]).
struct ReduceLayout {
  Tensor src;
  int64_t O = 1, R = 1, I = 1;
};

ReduceLayout layout_for(const Tensor& x, const ReducePlan& p) {
  int64_t n = x.dim();
  ReduceLayout l;
  l.R = p.R;
  if (x.is_contiguous()) {
    // The reduced dims of size != 1 must form one block [first, last] without a kept dim of
    // size != 1 inside it; dims of size 1 do not move any memory, so they never matter.
    int64_t first = -1, last = -1;
    for (int64_t i = 0; i < n; ++i)
      if (x.sizes()[size_t(i)] != 1 && p.reduced[size_t(i)]) {
        if (first < 0) first = i;
        last = i;
      }
    bool block = true;
    for (int64_t i = first + 1; first >= 0 && i < last; ++i)
      if (x.sizes()[size_t(i)] != 1 && !p.reduced[size_t(i)]) block = false;
    if (block) {
      l.src = x;
      if (first < 0) {  // nothing of size != 1 is reduced: every output reduces one element
        l.O = x.numel();
        return l;
      }
      for (int64_t i = 0; i < first; ++i) l.O *= x.sizes()[size_t(i)];
      for (int64_t i = last + 1; i < n; ++i) l.I *= x.sizes()[size_t(i)];
      return l;
    }
  }
  Shape perm;
  for (int64_t i = 0; i < n; ++i)
    if (!p.reduced[size_t(i)]) perm.push_back(i);
  for (int64_t i = 0; i < n; ++i)
    if (p.reduced[size_t(i)]) perm.push_back(i);
  l.src = contiguous(permute(x, perm));
  l.O = l.R == 0 ? shape_numel(p.kept_shape) : x.numel() / l.R;
  return l;
}

// Runs a sum-family kernel (sum, mean) into a tensor of the accumulate dtype.
Tensor run_sum(const Tensor& x, const ReducePlan& p, double scale, const char* op) {
  DType acc = kernels::cpu::sum_acc_dtype(x.dtype());
  Tensor out = empty(p.out_shape, acc, x.device());
  if (out.numel() == 0) return out;
  check_cpu(x, op);
  ReduceLayout l = layout_for(x, p);
  auto fn = kernels::cpu::sum_kernels().get(x.device().type, x.dtype(), op);
  fn(l.src.numel() == 0 ? nullptr : l.src.raw_data_ptr(), out.raw_data_ptr(), l.O, l.R, l.I,
     scale);
  return out;
}

Tensor cast(const Tensor& t, DType dtype) { return to(t, t.device(), dtype); }

Tensor extremum(const Tensor& x, const Shape& dims, bool keepdim, bool is_max) {
  const char* op = is_max ? "amax" : "amin";
  ReducePlan p = plan_reduce(x, dims, keepdim, op);
  Tensor out = empty(p.out_shape, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  // A shape error: meta raises it too.
  if (p.R == 0)
    throw ValueError(detail::concat(op, ": cannot reduce over a dim of size 0 (input ",
                                    shape_str(x.sizes()), ", dims ", shape_str(dims),
                                    "): the ", is_max ? "max" : "min",
                                    " of no elements is undefined"));
  if (x.is_meta()) return out;
  check_cpu(x, op);
  ReduceLayout l = layout_for(x, p);
  auto& table = is_max ? kernels::cpu::amax_kernels() : kernels::cpu::amin_kernels();
  table.get(x.device().type, x.dtype(), op)(l.src.raw_data_ptr(), out.raw_data_ptr(), l.O, l.R,
                                            l.I);
  return out;
}

std::tuple<Tensor, Tensor> arg_extremum(const Tensor& x, int64_t dim, bool keepdim, bool is_max,
                                        bool want_values, const char* op) {
  int64_t d = wrap_dim(dim, x.dim(), op);
  ReducePlan p = plan_reduce(x, {d}, keepdim, op);
  Tensor values = want_values ? empty(p.out_shape, x.dtype(), x.device()) : Tensor();
  Tensor indices = empty(p.out_shape, DType::i64, x.device());
  if (indices.numel() == 0) return {values, indices};
  if (p.R == 0)  // a shape error: meta raises it too
    throw ValueError(detail::concat(op, ": cannot reduce over dim ", d, " of size 0 (input ",
                                    shape_str(x.sizes()), ")"));
  if (x.is_meta()) return {values, indices};
  check_cpu(x, op);
  ReduceLayout l = layout_for(x, p);
  auto& table = is_max ? kernels::cpu::max_dim_kernels() : kernels::cpu::min_dim_kernels();
  table.get(x.device().type, x.dtype(), op)(l.src.raw_data_ptr(),
                                            want_values ? values.raw_data_ptr() : nullptr,
                                            indices.data_ptr<int64_t>(), l.O, l.R, l.I);
  return {values, indices};
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims, bool keepdim, std::optional<DType> dtype) {
  ReducePlan p = plan_reduce(x, dims, keepdim, "sum");
  DType out_dtype = dtype ? *dtype : (is_floating(x.dtype()) ? x.dtype() : DType::i64);
  if (x.is_meta()) return empty(p.out_shape, out_dtype, x.device());
  // Accumulate in the wider of the two accumulate dtypes: an f32 input summed "as f64" is
  // converted first, an f16 input summed as f32 is not (it accumulates in f32 anyway).
  Tensor src = x;
  DType acc_in = kernels::cpu::sum_acc_dtype(x.dtype());
  DType acc_out = kernels::cpu::sum_acc_dtype(out_dtype);
  if (acc_in != acc_out) src = cast(x, acc_out);
  return cast(run_sum(src, p, 1.0, "sum"), out_dtype);
}

Tensor mean(const Tensor& x, const Shape& dims, bool keepdim) {
  if (!is_floating(x.dtype()))
    throw ValueError(detail::concat("mean: expected a floating dtype, got ", x.dtype(),
                                    "; convert with .to(DType::f32) first"));
  ReducePlan p = plan_reduce(x, dims, keepdim, "mean");
  if (x.is_meta()) return empty(p.out_shape, x.dtype(), x.device());
  return cast(run_sum(x, p, 1.0 / double(p.R), "mean"), x.dtype());
}

Tensor var(const Tensor& x, const Shape& dims, int64_t correction, bool keepdim) {
  if (!is_floating(x.dtype()))
    throw ValueError(detail::concat("var: expected a floating dtype, got ", x.dtype(),
                                    "; convert with .to(DType::f32) first"));
  if (correction < 0)
    throw ValueError(detail::concat("var: correction must be >= 0, got ", correction));
  ReducePlan p = plan_reduce(x, dims, keepdim, "var");
  if (x.is_meta()) return empty(p.out_shape, x.dtype(), x.device());
  Tensor out = empty(p.out_shape, kernels::cpu::sum_acc_dtype(x.dtype()), x.device());
  if (out.numel() > 0) {
    check_cpu(x, "var");
    ReduceLayout l = layout_for(x, p);
    kernels::cpu::var_kernels().get(x.device().type, x.dtype(), "var")(
        l.src.numel() == 0 ? nullptr : l.src.raw_data_ptr(), out.raw_data_ptr(), l.O, l.R, l.I,
        correction);
  }
  return cast(out, x.dtype());
}

Tensor amax(const Tensor& x, const Shape& dims, bool keepdim) {
  return extremum(x, dims, keepdim, true);
}

Tensor amin(const Tensor& x, const Shape& dims, bool keepdim) {
  return extremum(x, dims, keepdim, false);
}

std::tuple<Tensor, Tensor> max_dim(const Tensor& x, int64_t dim, bool keepdim) {
  return arg_extremum(x, dim, keepdim, true, true, "max_dim");
}

std::tuple<Tensor, Tensor> min_dim(const Tensor& x, int64_t dim, bool keepdim) {
  return arg_extremum(x, dim, keepdim, false, true, "min_dim");
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  return std::get<1>(arg_extremum(x, dim, keepdim, true, false, "argmax"));
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  int64_t n = grad.dim(), k = int64_t(shape.size());
  if (k > n)
    throw ValueError(detail::concat("sum_to: cannot sum a gradient of shape ",
                                    shape_str(grad.sizes()), " to the larger rank shape ",
                                    shape_str(shape)));
  Shape dims;
  for (int64_t i = 0; i < n - k; ++i) dims.push_back(i);  // leading dims are dropped
  for (int64_t j = 0; j < k; ++j) {
    int64_t have = grad.sizes()[size_t(n - k + j)], want = shape[size_t(j)];
    if (want == have) continue;
    if (want != 1)
      throw ValueError(detail::concat("sum_to: shape ", shape_str(grad.sizes()),
                                      " does not broadcast from ", shape_str(shape), " (dim ", j,
                                      ": ", want, " vs ", have, ")"));
    dims.push_back(n - k + j);
  }
  if (dims.empty()) return grad;  // already that shape (an empty dim list would sum it all)
  return reshape(sum(grad, dims, /*keepdim=*/true, grad.dtype()), shape);
}

}  // namespace loom::native
