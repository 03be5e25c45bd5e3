// Allocation, views, copies and conversions: the metadata half of the op layer.
#include <algorithm>

#include "kernels/cpu/copy.h"
#include "core/cuda_status.h"
#include "tensor/native.h"

namespace loom::native {

namespace {

Tensor make_view(const Tensor& t, Shape sizes, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage();
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = t.dtype();
  return Tensor(std::move(impl));
}

// Strides for viewing (sizes, strides) as `shape` without copying, or nullopt when the
// memory layout does not allow it (PyTorch's computeStride).
std::optional<Shape> view_strides(const Shape& old_sizes, const Shape& old_strides,
                                  const Shape& shape) {
  Shape new_strides(shape.size());
  if (old_sizes.empty()) {
    std::fill(new_strides.begin(), new_strides.end(), 1);
    return new_strides;
  }
  int64_t numel = shape_numel(old_sizes);
  if (numel == 0) return contiguous_strides(shape);
  int64_t view_d = int64_t(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(old_sizes.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_sizes[d];
    if (d == 0 || (old_sizes[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        new_strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return new_strides;
}

}  // namespace

Tensor empty(const Shape& sizes, DType dtype, Device device) {
  int64_t n = shape_numel(sizes);
  size_t nbytes = 0;
  if (__builtin_mul_overflow(size_t(n), dtype_size(dtype), &nbytes))
    throw ValueError("empty: " + shape_str(sizes) + " elements overflow the byte count");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(nbytes, device, /*lazy=*/true);
  impl->sizes = sizes;
  impl->strides = contiguous_strides(sizes);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor empty_like(const Tensor& t) { return empty(t.sizes(), t.dtype(), t.device()); }
Tensor empty_like(const Tensor& t, DType dtype) { return empty(t.sizes(), dtype, t.device()); }

Tensor as_strided(const Tensor& t, const Shape& sizes, const Shape& strides, int64_t offset) {
  LOOM_CHECK(sizes.size() == strides.size(), "as_strided: sizes and strides differ in length");
  return make_view(t, sizes, strides, offset);
}

Shape infer_size(const Shape& sizes, int64_t numel, const char* op) {
  Shape out = sizes;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      if (infer_at >= 0) throw ValueError(detail::concat(op, ": only one dimension can be -1"));
      infer_at = int64_t(i);
    } else if (out[i] < 0) {
      throw ValueError(detail::concat(op, ": invalid size ", out[i], " in ", shape_str(sizes)));
    } else {
      known *= out[i];
    }
  }
  if (infer_at >= 0 && known != 0 && numel % known == 0) out[infer_at] = numel / known;
  if (infer_at >= 0 ? (known == 0 || numel % known != 0) : known != numel)
    throw ValueError(detail::concat(op, ": shape ", shape_str(sizes),
                                    " is invalid for input of size ", numel));
  return out;
}

Tensor view(const Tensor& t, const Shape& sizes) {
  Shape shape = infer_size(sizes, t.numel(), "view");
  auto strides = view_strides(t.sizes(), t.strides(), shape);
  if (!strides)
    throw ValueError(detail::concat("view: shape ", shape_str(shape),
                                    " is not compatible with the strides of a tensor of shape ",
                                    shape_str(t.sizes()), "; use reshape() (which copies)"));
  return make_view(t, shape, *strides, t.storage_offset());
}

Tensor reshape(const Tensor& t, const Shape& sizes) {
  Shape shape = infer_size(sizes, t.numel(), "reshape");
  if (auto strides = view_strides(t.sizes(), t.strides(), shape))
    return make_view(t, shape, *strides, t.storage_offset());
  return view(clone(t), shape);
}

Tensor transpose(const Tensor& t, int64_t d0, int64_t d1) {
  int64_t n = t.dim();
  if (n == 0) return make_view(t, {}, {}, t.storage_offset());
  d0 = wrap_dim(d0, n, "transpose");
  d1 = wrap_dim(d1, n, "transpose");
  Shape sizes = t.sizes(), strides = t.strides();
  std::swap(sizes[d0], sizes[d1]);
  std::swap(strides[d0], strides[d1]);
  return make_view(t, sizes, strides, t.storage_offset());
}

Tensor permute(const Tensor& t, const Shape& dims) {
  int64_t n = t.dim();
  if (int64_t(dims.size()) != n)
    throw ValueError(detail::concat("permute: got ", dims.size(), " dims for a tensor with ", n,
                                    " dims"));
  Shape sizes(n), strides(n);
  std::vector<bool> seen(n, false);
  for (int64_t i = 0; i < n; ++i) {
    int64_t d = wrap_dim(dims[i], n, "permute");
    if (seen[d]) throw ValueError(detail::concat("permute: dim ", d, " repeats in ", shape_str(dims)));
    seen[d] = true;
    sizes[i] = t.sizes()[d];
    strides[i] = t.strides()[d];
  }
  return make_view(t, sizes, strides, t.storage_offset());
}

Tensor slice(const Tensor& t, int64_t dim, std::optional<int64_t> start, std::optional<int64_t> end,
             int64_t step) {
  dim = wrap_dim(dim, t.dim(), "slice");
  if (step <= 0) throw ValueError(detail::concat("slice: step must be positive, got ", step));
  int64_t size = t.sizes()[dim];
  auto clampi = [&](int64_t v) { return std::clamp(v < 0 ? v + size : v, int64_t(0), size); };
  int64_t b = start ? clampi(*start) : 0;
  int64_t e = end ? clampi(*end) : size;
  int64_t len = e > b ? (e - b + step - 1) / step : 0;
  Shape sizes = t.sizes(), strides = t.strides();
  sizes[dim] = len;
  strides[dim] *= step;
  return make_view(t, sizes, strides, t.storage_offset() + b * t.strides()[dim]);
}

Tensor select(const Tensor& t, int64_t dim, int64_t index) {
  dim = wrap_dim(dim, t.dim(), "select");
  int64_t size = t.sizes()[dim];
  if (index < -size || index >= size)
    throw ValueError(detail::concat("select: index ", index, " is out of range for dim ", dim,
                                    " of size ", size));
  if (index < 0) index += size;
  Shape sizes = t.sizes(), strides = t.strides();
  int64_t offset = t.storage_offset() + index * strides[dim];
  sizes.erase(sizes.begin() + dim);
  strides.erase(strides.begin() + dim);
  return make_view(t, sizes, strides, offset);
}

Tensor expand(const Tensor& t, const Shape& sizes) {
  int64_t n = int64_t(sizes.size()), k = t.dim();
  if (n < k)
    throw ValueError(detail::concat("expand: target shape ", shape_str(sizes),
                                    " has fewer dims than the tensor ", shape_str(t.sizes())));
  Shape out(n), strides(n);
  for (int64_t i = n - 1; i >= 0; --i) {
    int64_t j = i - (n - k);
    int64_t have = j >= 0 ? t.sizes()[j] : 1;
    int64_t want = sizes[i] == -1 ? have : sizes[i];
    if (j < 0 && sizes[i] == -1)
      throw ValueError("expand: -1 is not allowed for a new leading dim");
    if (want < 0)
      throw ValueError(detail::concat("expand: invalid size ", sizes[i], " in the target ",
                                      shape_str(sizes), " (sizes are >= 0, or -1 to keep one)"));
    if (have == want) {
      out[i] = want;
      strides[i] = j >= 0 ? t.strides()[j] : 0;
    } else if (have == 1) {
      out[i] = want;
      strides[i] = 0;
    } else {
      throw ValueError(detail::concat("expand: the size ", have, " at dim ", j,
                                      " must match the target ", want, " (", shape_str(t.sizes()),
                                      " -> ", shape_str(sizes), ")"));
    }
  }
  return make_view(t, out, strides, t.storage_offset());
}

Tensor squeeze(const Tensor& t, std::optional<int64_t> dim) {
  Shape sizes, strides;
  std::optional<int64_t> only;
  if (dim) only = wrap_dim(*dim, t.dim(), "squeeze");
  for (int64_t i = 0; i < t.dim(); ++i) {
    bool drop = t.sizes()[i] == 1 && (!only || *only == i);
    if (!drop) {
      sizes.push_back(t.sizes()[i]);
      strides.push_back(t.strides()[i]);
    }
  }
  return make_view(t, sizes, strides, t.storage_offset());
}

Tensor unsqueeze(const Tensor& t, int64_t dim) {
  dim = wrap_dim(dim, t.dim() + 1, "unsqueeze");
  Shape sizes = t.sizes(), strides = t.strides();
  int64_t st = dim < t.dim() ? sizes[dim] * strides[dim] : 1;
  sizes.insert(sizes.begin() + dim, 1);
  strides.insert(strides.begin() + dim, st);
  return make_view(t, sizes, strides, t.storage_offset());
}

Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : clone(t); }

Tensor clone(const Tensor& t) {
  Tensor out = empty_like(t);
  copy_(out, t);
  return out;
}

Tensor to(const Tensor& t, Device device, DType dtype) {
  if (t.device() == device && t.dtype() == dtype) return t;
  Tensor out = empty(t.sizes(), dtype, device);
  copy_(out, t);
  return out;
}

void copy_(const Tensor& dst, const Tensor& src) {
  Tensor s = src.sizes() == dst.sizes() ? src : expand(src, dst.sizes());
  dst.storage()->bump_version();
  if (dst.is_meta()) return;
  if (s.is_meta())
    throw RuntimeError(detail::concat("copy_: cannot copy from a meta tensor of shape ",
                                      shape_str(src.sizes()),
                                      " into real storage: meta tensors hold no values"));
  if (!dst.is_cpu() || !s.is_cpu())
    throw RuntimeError(detail::concat("copy_: copying ", s.device(), " -> ", dst.device(),
                                      " needs a CUDA backend: ", kNoCudaBackend));
  if (dst.numel() == 0) return;
  kernels::cpu::copy_strided(dst.dim(), dst.sizes().data(), dst.raw_data_ptr(), dst.dtype(),
                             dst.strides().data(), s.raw_data_ptr(), s.dtype(),
                             s.strides().data());
}

void fill_(const Tensor& dst, Scalar value) {
  dst.storage()->bump_version();
  if (dst.is_meta() || dst.numel() == 0) return;
  if (!dst.is_cpu())
    throw RuntimeError(detail::concat("fill_: ", dst.device(), " tensors need a CUDA backend: ",
                                      kNoCudaBackend));
  kernels::cpu::fill_strided(dst.dim(), dst.sizes().data(), dst.raw_data_ptr(), dst.dtype(),
                             dst.strides().data(), value);
}

}  // namespace loom::native
