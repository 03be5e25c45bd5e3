// Joining and splitting along a dim: cat and stack copy into a new tensor; split,
// split_with_sizes and chunk return views that share the input's storage.
//
// cat promotes mixed dtypes (promote_types) and, as PyTorch does for backward compatibility,
// skips 1-D tensors of shape [0] whatever the other shapes are. chunk follows PyTorch's
// sizing: chunks of ceil(size / chunks), so it may return fewer than `chunks` pieces.
#include <algorithm>

#include "tensor/native.h"

namespace loom::native {

Tensor cat(const TensorList& tensors, int64_t dim) {
  const char* op = "cat";
  if (tensors.empty()) throw ValueError("cat: expected a non-empty list of tensors");
  // The legacy rule: a 1-D empty tensor joins anything and contributes nothing.
  auto skipped = [](const Tensor& t) { return t.dim() == 1 && t.sizes()[0] == 0; };
  int64_t ref = -1;
  DType dtype = tensors[0].dtype();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    if (t.device() != tensors[0].device())
      throw ValueError(detail::concat(op, ": tensor ", i, " is on ", t.device(), " but tensor 0 is on ",
                                      tensors[0].device(), "; move them to one device first"));
    dtype = promote_types(dtype, t.dtype());
    if (ref < 0 && !skipped(t)) ref = int64_t(i);
  }
  if (ref < 0) return empty({0}, dtype, tensors[0].device());
  const Tensor& r = tensors[size_t(ref)];
  if (r.dim() == 0)
    throw ValueError(detail::concat(op, ": zero-dimensional tensor ", ref,
                                    " cannot be concatenated; unsqueeze it or use stack"));
  dim = wrap_dim(dim, r.dim(), op);
  Shape out_shape = r.sizes();
  out_shape[dim] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    if (skipped(t)) continue;
    if (t.dim() != r.dim())
      throw ValueError(detail::concat(op, ": tensor ", i, " has ", t.dim(), " dims but tensor ", ref,
                                      " has ", r.dim(), " (shapes ", shape_str(t.sizes()), " and ",
                                      shape_str(r.sizes()), "); all must have the same number"));
    for (int64_t d = 0; d < r.dim(); ++d)
      if (d != dim && t.sizes()[d] != r.sizes()[d])
        throw ValueError(detail::concat(op, ": sizes of tensors must match except in dimension ",
                                        dim, ": tensor ", i, " has shape ", shape_str(t.sizes()),
                                        " but tensor ", ref, " has shape ", shape_str(r.sizes()),
                                        " (dim ", d, " differs)"));
    out_shape[dim] += t.sizes()[dim];
  }
  Tensor out = empty(out_shape, dtype, r.device());
  if (out.is_meta()) return out;
  int64_t offset = 0;
  for (const Tensor& t : tensors) {
    if (skipped(t)) continue;
    int64_t len = t.sizes()[dim];
    if (len > 0) copy_(slice(out, dim, offset, offset + len, 1), t);
    offset += len;
  }
  return out;
}

Tensor stack(const TensorList& tensors, int64_t dim) {
  const char* op = "stack";
  if (tensors.empty()) throw ValueError("stack: expected a non-empty list of tensors");
  for (size_t i = 1; i < tensors.size(); ++i)
    if (tensors[i].sizes() != tensors[0].sizes())
      throw ValueError(detail::concat(op, ": all tensors must have the same shape: tensor ", i,
                                      " has shape ", shape_str(tensors[i].sizes()),
                                      " but tensor 0 has shape ", shape_str(tensors[0].sizes())));
  dim = wrap_dim(dim, tensors[0].dim() + 1, op);
  TensorList expanded;
  expanded.reserve(tensors.size());
  for (const Tensor& t : tensors) expanded.push_back(unsqueeze(t, dim));
  return cat(expanded, dim);
}

TensorList split_with_sizes(const Tensor& x, const Shape& sizes, int64_t dim) {
  const char* op = "split_with_sizes";
  if (x.dim() == 0) throw ValueError("split_with_sizes: input must have at least 1 dim");
  dim = wrap_dim(dim, x.dim(), op);
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0)
      throw ValueError(detail::concat(op, ": sizes must be non-negative, got ", shape_str(sizes)));
    total += s;
  }
  if (total != x.sizes()[dim])
    throw ValueError(detail::concat(op, ": sizes ", shape_str(sizes), " sum to ", total,
                                    " but dim ", dim, " of ", shape_str(x.sizes()), " has size ",
                                    x.sizes()[dim]));
  TensorList out;
  out.reserve(sizes.size());
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(slice(x, dim, start, start + s, 1));
    start += s;
  }
  return out;
}

TensorList split(const Tensor& x, int64_t split_size, int64_t dim) {
  const char* op = "split";
  if (x.dim() == 0) throw ValueError("split: input must have at least 1 dim");
  dim = wrap_dim(dim, x.dim(), op);
  const int64_t size = x.sizes()[dim];
  if (split_size < 0 || (split_size == 0 && size != 0))
    throw ValueError(detail::concat(op, ": split_size must be positive (0 only for an empty dim), got ",
                                    split_size, " for dim ", dim, " of size ", size));
  // One piece when split_size is 0 (empty dim) or larger than the dim; the last may be short.
  int64_t pieces = split_size == 0 ? 1 : std::max<int64_t>(1, (size + split_size - 1) / split_size);
  Shape sizes(size_t(pieces), split_size);
  sizes.back() = size - split_size * (pieces - 1);
  return split_with_sizes(x, sizes, dim);
}

TensorList chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  const char* op = "chunk";
  if (x.dim() == 0) throw ValueError("chunk: input must have at least 1 dim");
  if (chunks <= 0) throw ValueError(detail::concat(op, ": chunks must be positive, got ", chunks));
  dim = wrap_dim(dim, x.dim(), op);
  const int64_t size = x.sizes()[dim];
  // An empty dim still gives `chunks` (empty) pieces; otherwise pieces of ceil(size/chunks).
  if (size == 0) return split_with_sizes(x, Shape(size_t(chunks), 0), dim);
  return split(x, (size + chunks - 1) / chunks, dim);
}

}  // namespace loom::native
