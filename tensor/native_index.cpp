// Indexing ops: embedding (and its scatter-add backward), index_select, index_add, tril/triu.
//
// Each front-end validates shapes, dtypes and index ranges, makes operands contiguous and
// hands kernels/cpu/gather.h a (outer, dim, inner) view of the buffers. Indices may be i64 or
// i32 and must lie in [0, size): negative indices are refused, as PyTorch's index_select and
// embedding do. Joining and splitting (cat, stack, split, chunk) live in native_join.cpp.
#include <algorithm>

#include "kernels/cpu/gather.h"
#include "tensor/native.h"

namespace loom::native {
namespace {

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  if (a.device() != b.device())
    throw ValueError(detail::concat(op, ": tensors are on different devices (", a.device(),
                                    " and ", b.device(), "); move them to one device first"));
}

void check_index_dtype(const char* op, const Tensor& index) {
  if (index.dtype() != DType::i64 && index.dtype() != DType::i32)
    throw ValueError(detail::concat(op, ": indices must be i64 or i32, got ", index.dtype(),
                                    "; convert with .to(DType::i64)"));
}

// The indices as a contiguous i64 CPU tensor, each checked against [0, size).
Tensor checked_indices(const char* op, const Tensor& index, int64_t size, const char* what) {
  Tensor idx = contiguous(to(index, index.device(), DType::i64));
  const int64_t* p = idx.data_ptr<int64_t>();
  for (int64_t i = 0, n = idx.numel(); i < n; ++i)
    if (p[i] < 0 || p[i] >= size)
      throw ValueError(detail::concat(op, ": index ", p[i], " is out of range for ", what, " of size ",
                                      size, " (valid indices are 0..", size - 1, ")"));
  return idx;
}

int64_t prod(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

Tensor zeros_of(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  fill_(t, 0.0);
  return t;
}

Tensor triangle(const char* op, const Tensor& x, int64_t diagonal, bool lower) {
  if (x.dim() < 2)
    throw ValueError(detail::concat(op, ": input must have at least 2 dims, got shape ",
                                    shape_str(x.sizes())));
  Tensor out = empty_like(x);
  if (x.is_meta() || x.numel() == 0) return out;
  Tensor xc = contiguous(x);
  const int64_t nd = x.dim();
  const int64_t rows = x.sizes()[nd - 2], cols = x.sizes()[nd - 1];
  kernels::cpu::triangle(xc.raw_data_ptr(), out.raw_data_ptr(), int64_t(x.element_size()),
                         x.numel() / (rows * cols), rows, cols, diagonal, lower);
  return out;
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  const char* op = "embedding";
  check_same_device(op, weight, indices);
  if (weight.dim() != 2)
    throw ValueError(detail::concat(op, ": weight must be 2-D (num_embeddings, dim), got shape ",
                                    shape_str(weight.sizes())));
  check_index_dtype(op, indices);
  const int64_t v = weight.sizes()[0], d = weight.sizes()[1];
  Shape out_shape = indices.sizes();  // (...) -> (..., D)
  out_shape.push_back(d);
  Tensor out = empty(out_shape, weight.dtype(), weight.device());
  if (weight.is_meta() || out.numel() == 0) return out;
  Tensor idx = checked_indices(op, indices, v, "an embedding (weight rows)");
  Tensor w = contiguous(weight);
  kernels::cpu::index_gather(w.raw_data_ptr(), out.raw_data_ptr(), int64_t(w.element_size()), 1,
                             v, d, idx.data_ptr<int64_t>(), idx.numel());
  return out;
}

Tensor embedding_backward(const Tensor& grad_out, const Tensor& indices, int64_t num_weights) {
  const char* op = "embedding_backward";
  check_same_device(op, grad_out, indices);
  check_index_dtype(op, indices);
  if (num_weights < 0)
    throw ValueError(detail::concat(op, ": num_weights must be non-negative, got ", num_weights));
  const Shape& is = indices.sizes();
  const Shape& gs = grad_out.sizes();
  if (gs.size() != is.size() + 1 || !std::equal(is.begin(), is.end(), gs.begin()))
    throw ValueError(detail::concat(op, ": grad_out ", shape_str(gs),
                                    " must have the indices' shape ", shape_str(is),
                                    " plus the embedding dim"));
  const int64_t d = gs.back();
  if (grad_out.is_meta()) return empty({num_weights, d}, grad_out.dtype(), grad_out.device());
  Tensor out = zeros_of({num_weights, d}, grad_out.dtype(), grad_out.device());
  if (indices.numel() == 0 || d == 0) return out;
  Tensor idx = checked_indices(op, indices, num_weights, "an embedding (weight rows)");
  Tensor g = contiguous(grad_out);
  // Rows of grad_out scatter-add into the rows of a (V, D) zeros; repeated indices add up.
  kernels::cpu::index_scatter_add(g.dtype(), g.raw_data_ptr(), out.raw_data_ptr(), 1, num_weights,
                                  d, idx.data_ptr<int64_t>(), idx.numel());
  return out;
}

// index_select / index_add: an integer 0-D or 1-D index into an input with at least 1 dim.
static void check_dim_index(const char* op, const Tensor& x, const Tensor& index) {
  check_index_dtype(op, index);
  if (x.dim() == 0)
    throw ValueError(detail::concat(op, ": input must have at least 1 dim; unsqueeze it first"));
  if (index.dim() > 1)
    throw ValueError(detail::concat(op, ": index must be 0-D or 1-D, got shape ",
                                    shape_str(index.sizes())));
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  const char* op = "index_select";
  check_same_device(op, x, index);
  check_dim_index(op, x, index);
  dim = wrap_dim(dim, x.dim(), op);
  Shape out_shape = x.sizes();
  out_shape[dim] = index.numel();
  Tensor out = empty(out_shape, x.dtype(), x.device());
  if (x.is_meta() || out.numel() == 0) return out;
  Tensor idx = checked_indices(op, index, x.sizes()[dim], detail::concat("dim ", dim).c_str());
  Tensor xc = contiguous(x);
  kernels::cpu::index_gather(xc.raw_data_ptr(), out.raw_data_ptr(), int64_t(x.element_size()),
                             prod(x.sizes(), 0, dim), x.sizes()[dim],
                             prod(x.sizes(), dim + 1, x.sizes().size()), idx.data_ptr<int64_t>(),
                             idx.numel());
  return out;
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& source) {
  const char* op = "index_add";
  check_same_device(op, x, index);
  check_same_device(op, x, source);
  check_dim_index(op, x, index);
  if (source.dtype() != x.dtype())
    throw ValueError(detail::concat(op, ": source dtype ", source.dtype(), " differs from input dtype ",
                                    x.dtype(), "; convert source with .to(", x.dtype(), ")"));
  dim = wrap_dim(dim, x.dim(), op);
  Shape expected = x.sizes();
  expected[dim] = index.numel();
  if (source.sizes() != expected)
    throw ValueError(detail::concat(op, ": source has shape ", shape_str(source.sizes()),
                                    " but input ", shape_str(x.sizes()), " with ", index.numel(),
                                    " indices along dim ", dim, " needs ", shape_str(expected)));
  if (x.is_meta()) return empty_like(x);
  Tensor out = clone(x);
  if (source.numel() == 0) return out;
  Tensor idx = checked_indices(op, index, x.sizes()[dim], detail::concat("dim ", dim).c_str());
  Tensor s = contiguous(source);
  kernels::cpu::index_scatter_add(x.dtype(), s.raw_data_ptr(), out.raw_data_ptr(),
                                  prod(x.sizes(), 0, dim), x.sizes()[dim],
                                  prod(x.sizes(), dim + 1, x.sizes().size()),
                                  idx.data_ptr<int64_t>(), idx.numel());
  return out;
}

Tensor tril(const Tensor& x, int64_t diagonal) { return triangle("tril", x, diagonal, true); }
Tensor triu(const Tensor& x, int64_t diagonal) { return triangle("triu", x, diagonal, false); }

}  // namespace loom::native
