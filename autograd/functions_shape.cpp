// Differentiable views, copies, conversions, joins and indexing.
#include "autograd/node.h"
#include "tensor/ops.h"

namespace loom {

using autograd::record;
using autograd::SavedTensor;

namespace {

Tensor zeros_shaped(const Shape& sizes, const Tensor& like) {
  Tensor z = native::empty(sizes, like.dtype(), like.device());
  native::fill_(z, 0.0);
  return z;
}

// For views whose gradient is the incoming one reshaped back (view, reshape, squeeze,
// unsqueeze, flatten, expand): the engine fits shapes (sum over broadcast dims or reshape).
Tensor shape_view(const char* name, const Tensor& x, Tensor out) {
  if (autograd::needs_grad(x))
    record(name, {x}, out, [](const TensorList& g) { return TensorList{g[0]}; });
  return out;
}

// For views that pick a region: the gradient is zeros with the region filled in.
template <class Region>
Tensor region_view(const char* name, const Tensor& x, Tensor out, Region region) {
  if (autograd::needs_grad(x))
    record(name, {x}, out, [in = x.sizes(), region](const TensorList& g) {
      Tensor gx = zeros_shaped(in, g[0]);
      native::copy_(region(gx), g[0]);
      return TensorList{gx};
    });
  return out;
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  return shape_view("ViewBackward", *this, native::view(*this, shape));
}
Tensor Tensor::reshape(const Shape& shape) const {
  return shape_view("ReshapeBackward", *this, native::reshape(*this, shape));
}
Tensor Tensor::expand(const Shape& shape) const {
  return shape_view("ExpandBackward", *this, native::expand(*this, shape));
}
Tensor Tensor::squeeze() const {
  return shape_view("SqueezeBackward", *this, native::squeeze(*this, std::nullopt));
}
Tensor Tensor::squeeze(int64_t dim) const {
  return shape_view("SqueezeBackward", *this, native::squeeze(*this, dim));
}
Tensor Tensor::unsqueeze(int64_t dim) const {
  return shape_view("UnsqueezeBackward", *this, native::unsqueeze(*this, dim));
}
Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  int64_t n = dim();
  if (n == 0) return reshape({1});
  int64_t s = wrap_dim(start_dim, n, "flatten"), e = wrap_dim(end_dim, n, "flatten");
  if (s > e) throw ValueError("flatten: start_dim must not come after end_dim");
  Shape shape(sizes().begin(), sizes().begin() + s);
  int64_t merged = 1;
  for (int64_t i = s; i <= e; ++i) merged *= sizes()[i];
  shape.push_back(merged);
  shape.insert(shape.end(), sizes().begin() + e + 1, sizes().end());
  return reshape(shape);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  Tensor out = native::transpose(*this, d0, d1);
  if (autograd::needs_grad(*this))
    record("TransposeBackward", {*this}, out, [d0, d1](const TensorList& g) {
      return TensorList{native::transpose(g[0], d0, d1)};
    });
  return out;
}
Tensor Tensor::t() const {
  if (dim() > 2) throw ValueError(detail::concat("t: expects a tensor with <= 2 dims, got ", dim()));
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::permute(const Shape& dims) const {
  Tensor out = native::permute(*this, dims);
  if (autograd::needs_grad(*this)) {
    Shape inverse(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) inverse[wrap_dim(dims[i], dim(), "permute")] = int64_t(i);
    record("PermuteBackward", {*this}, out, [inverse](const TensorList& g) {
      return TensorList{native::permute(g[0], inverse)};
    });
  }
  return out;
}

Tensor Tensor::slice(int64_t dim, std::optional<int64_t> start, std::optional<int64_t> end,
                     int64_t step) const {
  return region_view("SliceBackward", *this, native::slice(*this, dim, start, end, step),
                     [=](const Tensor& gx) { return native::slice(gx, dim, start, end, step); });
}
Tensor Tensor::narrow(int64_t dim, int64_t start, int64_t length) const {
  int64_t size = this->size(dim);
  int64_t s = start < 0 ? start + size : start;
  if (s < 0 || length < 0 || s + length > size)
    throw ValueError(detail::concat("narrow: start ", start, " and length ", length,
                                    " exceed dim ", dim, " of size ", size));
  return slice(dim, s, s + length, 1);
}
Tensor Tensor::select(int64_t dim, int64_t index) const {
  return region_view("SelectBackward", *this, native::select(*this, dim, index),
                     [=](const Tensor& gx) { return native::select(gx, dim, index); });
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return shape_view("ContiguousBackward", *this, native::contiguous(*this));
}
Tensor Tensor::clone() const { return shape_view("CloneBackward", *this, native::clone(*this)); }

Tensor Tensor::to(Device device, DType dtype) const {
  Tensor out = native::to(*this, device, dtype);
  if (out.is_same(*this)) return out;
  if (autograd::needs_grad(*this) && is_floating(dtype))
    record("ToBackward", {*this}, out, [back = this->device()](const TensorList& g) {
      // The engine casts the dtype back; the device is moved here.
      return TensorList{native::to(g[0], back, g[0].dtype())};
    });
  return out;
}
Tensor Tensor::to(DType dtype) const { return to(device(), dtype); }
Tensor Tensor::to(Device device) const { return to(device, dtype()); }

TensorList Tensor::split(int64_t split_size, int64_t dim) const {
  return loom::split(*this, split_size, dim);
}
TensorList Tensor::chunk(int64_t chunks, int64_t dim) const {
  return loom::chunk(*this, chunks, dim);
}

// The parts' gradients are joined back; parts no gradient reached contribute zeros.
static TensorList split_parts(const Tensor& x, TensorList parts, int64_t dim) {
  if (autograd::needs_grad(x)) {
    int64_t d = wrap_dim(dim, x.dim(), "split");
    record("SplitBackward", {x}, parts, [d, x_sizes = x.sizes(), parts_meta = [&] {
             std::vector<Shape> m;
             for (const Tensor& p : parts) m.push_back(p.sizes());
             return m;
           }()](const TensorList& g) {
             TensorList filled;
             const Tensor* any = nullptr;
             for (const Tensor& t : g) if (t.defined()) any = &t;
             for (size_t i = 0; i < g.size(); ++i)
               filled.push_back(g[i].defined() ? g[i] : zeros_shaped(parts_meta[i], *any));
             return TensorList{native::cat(filled, d)};
           });
  }
  return parts;
}
TensorList split(const Tensor& x, int64_t split_size, int64_t dim) {
  return split_parts(x, native::split(x, split_size, dim), dim);
}
TensorList chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  return split_parts(x, native::chunk(x, chunks, dim), dim);
}

Tensor cat(const TensorList& tensors, int64_t dim) {
  Tensor out = native::cat(tensors, dim);
  if (autograd::needs_grad(tensors)) {
    int64_t d = wrap_dim(dim, out.dim(), "cat");
    Shape sizes;
    for (const Tensor& t : tensors) sizes.push_back(t.size(d));
    record("CatBackward", tensors, out, [d, sizes](const TensorList& g) {
      return native::split_with_sizes(g[0], sizes, d);
    });
  }
  return out;
}

Tensor stack(const TensorList& tensors, int64_t dim) {
  TensorList parts;
  for (const Tensor& t : tensors) parts.push_back(t.unsqueeze(wrap_dim(dim, t.dim() + 1, "stack")));
  return cat(parts, dim);
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor out = native::index_select(x, dim, index);
  if (autograd::needs_grad(x))
    record("IndexSelectBackward", {x}, out,
           [in = x.sizes(), dim, si = SavedTensor(index)](const TensorList& g) {
             return TensorList{native::index_add(zeros_shaped(in, g[0]), dim, si.unpack(), g[0])};
           });
  return out;
}

Tensor tril(const Tensor& x, int64_t diagonal) {
  Tensor out = native::tril(x, diagonal);
  if (autograd::needs_grad(x))
    record("TrilBackward", {x}, out, [diagonal](const TensorList& g) {
      return TensorList{native::tril(g[0], diagonal)};
    });
  return out;
}
Tensor triu(const Tensor& x, int64_t diagonal) {
  Tensor out = native::triu(x, diagonal);
  if (autograd::needs_grad(x))
    record("TriuBackward", {x}, out, [diagonal](const TensorList& g) {
      return TensorList{native::triu(g[0], diagonal)};
    });
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  Tensor out = native::embedding(weight, indices);
  if (autograd::needs_grad(weight))
    record("EmbeddingBackward", {weight}, out,
           [si = SavedTensor(indices), v = weight.size(0)](const TensorList& g) {
             return TensorList{native::embedding_backward(g[0], si.unpack(), v)};
           });
  return out;
}

Tensor dropout(const Tensor& x, double p, bool training) {
  if (!training || p == 0.0) return x;
  Tensor mask = native::dropout_mask(x, p);
  Tensor out = native::binary(native::BinaryOp::mul, x, mask);
  if (autograd::needs_grad(x))
    record("DropoutBackward", {x}, out, [sm = SavedTensor(mask)](const TensorList& g) {
      return TensorList{native::binary(native::BinaryOp::mul, g[0], sm.unpack())};
    });
  return out;
}

Tensor Tensor::index_select(int64_t dim, const Tensor& index) const {
  return loom::index_select(*this, dim, index);
}
Tensor Tensor::tril(int64_t diagonal) const { return loom::tril(*this, diagonal); }
Tensor Tensor::triu(int64_t diagonal) const { return loom::triu(*this, diagonal); }

}  // namespace loom
