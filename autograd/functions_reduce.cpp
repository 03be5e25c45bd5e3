// Differentiable reductions, softmax, losses and normalisation.
//
// Under autocast these run in f32 (docs/design.md "Precision"): low-precision inputs are cast up
// first, through the differentiable to(), so their gradients come back in the input dtype.
#include <numeric>

#include "autograd/node.h"
#include "tensor/autocast.h"
#include "tensor/ops.h"

namespace loom {

using autograd::record;
using autograd::SavedTensor;
using native::BinaryOp;

namespace {

Tensor f32_under_autocast(const Tensor& x) {
  if (autocast_state().enabled && is_low_precision(x.dtype())) return x.to(DType::f32);
  return x;
}

Shape all_dims(int64_t n) {
  Shape d(n);
  std::iota(d.begin(), d.end(), 0);
  return d;
}

// Re-inserts reduced dims (size 1) into g so that it broadcasts against the input.
Tensor unreduce(const Tensor& g, const Shape& in_sizes, const Shape& dims, bool keepdim) {
  if (keepdim || in_sizes.empty()) return g;
  Shape shape = in_sizes;
  int64_t n = int64_t(in_sizes.size());
  for (int64_t d : (dims.empty() ? all_dims(n) : dims)) shape[wrap_dim(d, n, "sum")] = 1;
  return native::reshape(g, shape);
}

int64_t reduced_count(const Shape& in_sizes, const Shape& dims) {
  if (dims.empty()) return shape_numel(in_sizes);
  int64_t c = 1;
  for (int64_t d : dims) c *= in_sizes[wrap_dim(d, int64_t(in_sizes.size()), "mean")];
  return c;
}

}  // namespace

Tensor sum(const Tensor& x0, const Shape& dims, bool keepdim) {
  Tensor x = f32_under_autocast(x0);
  Tensor out = native::sum(x, dims, keepdim);
  if (autograd::needs_grad(x))
    record("SumBackward", {x}, out, [in = x.sizes(), dims, keepdim](const TensorList& g) {
      return TensorList{native::expand(unreduce(g[0], in, dims, keepdim), in)};
    });
  return out;
}
Tensor sum(const Tensor& x) { return sum(x, Shape{}, false); }

Tensor mean(const Tensor& x0, const Shape& dims, bool keepdim) {
  Tensor x = f32_under_autocast(x0);
  Tensor out = native::mean(x, dims, keepdim);
  if (autograd::needs_grad(x))
    record("MeanBackward", {x}, out, [in = x.sizes(), dims, keepdim](const TensorList& g) {
      Tensor scaled = native::binary(BinaryOp::div, g[0],
                                     native::wrap_scalar(double(reduced_count(in, dims)), g[0]));
      return TensorList{native::expand(unreduce(scaled, in, dims, keepdim), in)};
    });
  return out;
}
Tensor mean(const Tensor& x) { return mean(x, Shape{}, false); }

Tensor var(const Tensor& x0, const Shape& dims, int64_t correction, bool keepdim) {
  Tensor x = f32_under_autocast(x0);
  Tensor out = native::var(x, dims, correction, keepdim);
  if (autograd::needs_grad(x))
    record("VarBackward", {x}, out,
           [sx = SavedTensor(x), dims, correction, keepdim](const TensorList& g) {
             // d var / dx_i = 2 (x_i - mean) / (N - correction)
             Tensor v = sx.unpack();
             int64_t n = reduced_count(v.sizes(), dims);
             Tensor centered = native::binary(BinaryOp::sub, v, native::mean(v, dims, true));
             Tensor gk = unreduce(g[0], v.sizes(), dims, keepdim);
             double scale = 2.0 / double(std::max<int64_t>(n - correction, 0));
             return TensorList{native::binary(
                 BinaryOp::mul, native::binary(BinaryOp::mul, centered, gk),
                 native::wrap_scalar(scale, centered))};
           });
  return out;
}

// amax: the gradient is shared evenly among the positions holding the maximum (PyTorch).
static Tensor extreme(const Tensor& x, const Shape& dims, bool keepdim, bool is_max) {
  Tensor out = is_max ? native::amax(x, dims, keepdim) : native::amin(x, dims, keepdim);
  if (autograd::needs_grad(x))
    record(is_max ? "AmaxBackward" : "AminBackward", {x}, out,
           [sx = SavedTensor(x), so = SavedTensor(out), dims, keepdim](const TensorList& g) {
             Tensor v = sx.unpack();
             Tensor o = unreduce(so.unpack(), v.sizes(), dims, keepdim);
             Tensor hit = native::binary(BinaryOp::eq, v, o);
             Tensor count = native::sum(hit, dims, true);
             Tensor share = native::binary(BinaryOp::div, unreduce(g[0], v.sizes(), dims, keepdim),
                                           count);
             Tensor zero = native::empty_like(v, share.dtype());
             native::fill_(zero, 0.0);
             return TensorList{native::where(hit, native::expand(share, v.sizes()), zero)};
           });
  return out;
}
Tensor amax(const Tensor& x, const Shape& dims, bool keepdim) { return extreme(x, dims, keepdim, true); }

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) { return native::argmax(x, dim, keepdim); }

// max/min along a dim: the gradient goes to the one index returned.
static std::tuple<Tensor, Tensor> extreme_dim(const Tensor& x, int64_t dim, bool keepdim,
                                              bool is_max) {
  auto [values, indices] = is_max ? native::max_dim(x, dim, keepdim) : native::min_dim(x, dim, keepdim);
  if (autograd::needs_grad(x)) {
    int64_t d = wrap_dim(dim, x.dim(), "max");
    record(is_max ? "MaxBackward" : "MinBackward", {x}, TensorList{values},
           [si = SavedTensor(indices), in = x.sizes(), d, keepdim](const TensorList& g) {
             Tensor idx = si.unpack(), gv = g[0];
             if (!keepdim && !in.empty()) {
               idx = native::unsqueeze(idx, d);
               gv = native::unsqueeze(gv, d);
             }
             // one_hot[..., j, ...] = (j == idx): compare a broadcast arange along dim.
             Shape ar_shape(in.size(), 1);
             if (!in.empty()) ar_shape[d] = in[d];
             Tensor ar = native::empty({in.empty() ? 1 : in[d]}, DType::i64, idx.device());
             int64_t* p = ar.data_ptr<int64_t>();
             for (int64_t j = 0; j < ar.numel(); ++j) p[j] = j;
             Tensor hit = native::binary(BinaryOp::eq, native::reshape(ar, ar_shape), idx);
             Tensor zero = native::empty(in, gv.dtype(), gv.device());
             native::fill_(zero, 0.0);
             return TensorList{native::where(hit, native::expand(gv, in), zero)};
           });
  }
  return {values, indices};
}

Tensor softmax(const Tensor& x0, int64_t dim) {
  Tensor x = f32_under_autocast(x0);
  Tensor out = native::softmax(x, dim);
  if (autograd::needs_grad(x))
    record("SoftmaxBackward", {x}, out, [so = SavedTensor(out), dim](const TensorList& g) {
      return TensorList{native::softmax_backward(g[0], so.unpack(), dim)};
    });
  return out;
}

Tensor log_softmax(const Tensor& x0, int64_t dim) {
  Tensor x = f32_under_autocast(x0);
  Tensor out = native::log_softmax(x, dim);
  if (autograd::needs_grad(x))
    record("LogSoftmaxBackward", {x}, out, [so = SavedTensor(out), dim](const TensorList& g) {
      return TensorList{native::log_softmax_backward(g[0], so.unpack(), dim)};
    });
  return out;
}

Tensor cross_entropy(const Tensor& logits0, const Tensor& target, int64_t ignore_index,
                     double label_smoothing, Reduction reduction) {
  Tensor logits = f32_under_autocast(logits0);
  Tensor out = native::cross_entropy(logits, target, ignore_index, label_smoothing, reduction);
  if (autograd::needs_grad(logits))
    record("CrossEntropyBackward", {logits}, out,
           [sl = SavedTensor(logits), st = SavedTensor(target), ignore_index, label_smoothing,
            reduction](const TensorList& g) {
             return TensorList{native::cross_entropy_backward(g[0], sl.unpack(), st.unpack(),
                                                              ignore_index, label_smoothing,
                                                              reduction)};
           });
  return out;
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  Tensor diff = sub(f32_under_autocast(input), f32_under_autocast(target));
  Tensor sq = mul(diff, diff);
  switch (reduction) {
    case Reduction::none: return sq;
    case Reduction::sum: return sum(sq);
    case Reduction::mean: break;
  }
  return mean(sq);
}

Tensor layer_norm(const Tensor& x0, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  Tensor x = f32_under_autocast(x0);
  auto [out, mu, rstd] = native::layer_norm(x, normalized_shape, weight, bias, eps);
  if (autograd::needs_grad({&x, &weight, &bias}))
    record("LayerNormBackward", {x, weight, bias}, out,
           [sx = SavedTensor(x), sw = SavedTensor(weight), sb = SavedTensor(bias),
            smu = SavedTensor(mu), sr = SavedTensor(rstd), normalized_shape](const TensorList& g) {
             auto [gx, gw, gb] = native::layer_norm_backward(g[0], sx.unpack(), normalized_shape,
                                                             smu.unpack(), sr.unpack(),
                                                             sw.unpack(), sb.unpack());
             return TensorList{gx, gw, gb};
           });
  return out;
}

// ---- Tensor methods of this family ----
Tensor Tensor::sum() const { return loom::sum(*this); }
Tensor Tensor::sum(const Shape& dims, bool keepdim) const { return loom::sum(*this, dims, keepdim); }
Tensor Tensor::mean() const { return loom::mean(*this); }
Tensor Tensor::mean(const Shape& dims, bool keepdim) const {
  return loom::mean(*this, dims, keepdim);
}
Tensor Tensor::var(const Shape& dims, int64_t correction, bool keepdim) const {
  return loom::var(*this, dims, correction, keepdim);
}
Tensor Tensor::max() const { return extreme(*this, {}, false, true); }
Tensor Tensor::min() const { return extreme(*this, {}, false, false); }
std::tuple<Tensor, Tensor> Tensor::max(int64_t dim, bool keepdim) const {
  return extreme_dim(*this, dim, keepdim, true);
}
std::tuple<Tensor, Tensor> Tensor::min(int64_t dim, bool keepdim) const {
  return extreme_dim(*this, dim, keepdim, false);
}
Tensor Tensor::argmax(int64_t dim, bool keepdim) const { return loom::argmax(*this, dim, keepdim); }
Tensor Tensor::softmax(int64_t dim) const { return loom::softmax(*this, dim); }
Tensor Tensor::log_softmax(int64_t dim) const { return loom::log_softmax(*this, dim); }
Tensor Tensor::norm(double p) const {
  if (p == 2.0) return loom::sqrt(loom::sum(loom::mul(*this, *this)));
  return loom::pow(loom::sum(loom::pow(loom::abs(*this), p)), 1.0 / p);
}

}  // namespace loom
