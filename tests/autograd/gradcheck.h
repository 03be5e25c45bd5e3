// gradcheck: compares the gradients autograd computes with central finite differences.
//
// The scalar checked is L = sum(fn(inputs) * W), W a fixed pseudo-random f64 tensor of the
// output's shape (so every output element contributes with its own weight, unlike a plain
// sum whose gradient hides errors that cancel). dL/dx from backward is compared, element by
// element, with (L(x + eps) - L(x - eps)) / (2 eps) evaluated in f64 under NoGradGuard.
//
// Inputs must be f64 leaves that require grad; they may be non-contiguous views (transposed,
// sliced). They may not be expanded (stride 0): perturbing one stored element would move
// several logical ones. Not a check of second derivatives (no double backward in loom).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <string>

#include "autograd/grad_mode.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace loom::testing_util {

using GradcheckFn = std::function<Tensor(const TensorList&)>;

namespace gradcheck_detail {

inline std::string index_str(const Shape& sizes, int64_t linear) {
  Shape idx(sizes.size());
  for (int64_t d = int64_t(sizes.size()) - 1; d >= 0; --d) {
    idx[size_t(d)] = linear % sizes[size_t(d)];
    linear /= sizes[size_t(d)];
  }
  return shape_str(idx);
}

// The stored element behind logical (row-major) index `linear` of a strided view.
inline double* element(const Tensor& t, int64_t linear) {
  int64_t off = 0;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    off += (linear % t.size(d)) * t.stride(d);
    linear /= t.size(d);
  }
  return t.data_ptr<double>() + off;
}

// L = sum(out * w) in f64, through the differentiable ops when grad mode is on.
inline Tensor weighted_sum(const Tensor& out, const Tensor& w) {
  return loom::sum(loom::mul(out.to(DType::f64), w));
}

}  // namespace gradcheck_detail

inline ::testing::AssertionResult gradcheck(const GradcheckFn& fn, const TensorList& inputs,
                                            double eps = 1e-6, double atol = 1e-5,
                                            double rtol = 1e-3) {
  namespace gd = gradcheck_detail;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || x.dtype() != DType::f64 || !x.requires_grad() || !x.is_leaf())
      return ::testing::AssertionFailure()
             << "gradcheck: input " << i << " must be an f64 leaf that requires grad";
    for (int64_t d = 0; d < x.dim(); ++d)
      if (x.stride(d) == 0 && x.size(d) > 1)
        return ::testing::AssertionFailure()
               << "gradcheck: input " << i << " is expanded (stride 0); expand inside fn instead";
  }

  // Analytical: one backward of L.
  for (Tensor x : inputs) x.set_grad(Tensor());  // a handle copy shares the leaf
  Tensor out = fn(inputs);
  if (!out.defined()) return ::testing::AssertionFailure() << "gradcheck: fn returned undefined";
  Tensor w = native::empty(out.sizes(), DType::f64, Device::cpu());
  Generator gen(1234);
  fill_uniform(w, 0.5, 1.5, gen);  // no weight near 0: every output element counts
  // Signs vary too, so that sums of gradients cannot hide a wrong sign.
  {
    double* p = w.data_ptr<double>();
    for (int64_t k = 0; k < w.numel(); ++k)
      if (k % 3 == 1) p[k] = -p[k];
  }
  if (out.requires_grad()) gd::weighted_sum(out, w).backward();

  auto loss_value = [&]() {
    NoGradGuard no_grad;
    return gd::weighted_sum(fn(inputs), w).item<double>();
  };

  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    Tensor g = x.grad();
    if (g.defined() && g.sizes() != x.sizes())
      return ::testing::AssertionFailure()
             << "gradcheck: input " << i << " has shape " << shape_str(x.sizes())
             << " but its gradient has shape " << shape_str(g.sizes());
    if (g.defined() && g.dtype() != x.dtype())
      return ::testing::AssertionFailure()
             << "gradcheck: input " << i << " is " << x.dtype() << " but its gradient is "
             << g.dtype();
    std::vector<double> analytical =
        g.defined() ? g.to_double_vector() : std::vector<double>(size_t(x.numel()), 0.0);
    for (int64_t k = 0; k < x.numel(); ++k) {
      double* p = gd::element(x, k);
      double saved = *p;
      *p = saved + eps;
      double plus = loss_value();
      *p = saved - eps;
      double minus = loss_value();
      *p = saved;
      double numerical = (plus - minus) / (2.0 * eps);
      double a = analytical[size_t(k)];
      if (!(std::abs(a - numerical) <= atol + rtol * std::abs(numerical)))
        return ::testing::AssertionFailure()
               << "gradcheck: input " << i << " (shape " << shape_str(x.sizes()) << ") at index "
               << gd::index_str(x.sizes(), k) << ": analytical " << a << " vs numerical "
               << numerical << " (|diff| " << std::abs(a - numerical) << " > atol " << atol
               << " + rtol " << rtol << " * |numerical|)";
    }
  }
  return ::testing::AssertionSuccess();
}

// An f64 leaf that requires grad, filled from U(lo, hi) with its own seed.
inline Tensor leaf(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor t = native::empty(shape, DType::f64, Device::cpu());
  Generator gen(seed);
  fill_uniform(t, lo, hi, gen);
  t.requires_grad_();
  return t;
}

// A non-contiguous leaf of `shape`: the transpose of a (shape with the last two dims
// swapped) contiguous tensor.
inline Tensor leaf_transposed(const Shape& shape, uint64_t seed, double lo = -1.0,
                              double hi = 1.0) {
  Shape base = shape;
  std::swap(base[base.size() - 1], base[base.size() - 2]);
  Tensor t = native::empty(base, DType::f64, Device::cpu());
  Generator gen(seed);
  fill_uniform(t, lo, hi, gen);
  Tensor v = native::transpose(t, -2, -1);
  v.requires_grad_();
  return v;
}

// A non-contiguous leaf of `shape`: every other element along dim 0 of a twice-as-long one.
inline Tensor leaf_strided(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Shape base = shape;
  base[0] *= 2;
  Tensor t = native::empty(base, DType::f64, Device::cpu());
  Generator gen(seed);
  fill_uniform(t, lo, hi, gen);
  Tensor v = native::slice(t, 0, std::nullopt, std::nullopt, 2);
  v.requires_grad_();
  return v;
}

}  // namespace loom::testing_util
