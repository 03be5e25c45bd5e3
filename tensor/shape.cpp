#include "tensor/shape.h"

#include <sstream>

#include "core/error.h"

namespace loom {

int64_t shape_numel(const Shape& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) {
    if (s < 0) throw ValueError("negative size in shape " + shape_str(sizes));
    if (__builtin_mul_overflow(n, s, &n))
      throw ValueError("shape " + shape_str(sizes) + " has more than 2^63 elements");
  }
  return n;
}

Shape contiguous_strides(const Shape& sizes) {
  Shape strides(sizes.size());
  int64_t s = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    strides[i] = s;
    s *= sizes[i] > 0 ? sizes[i] : 1;
  }
  return strides;
}

std::string shape_str(const Shape& sizes) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << ']';
  return out.str();
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t x = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t y = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (x != y && x != 1 && y != 1)
      throw ValueError(detail::concat(op, ": shapes ", shape_str(a), " and ", shape_str(b),
                                      " cannot be broadcast (", x, " != ", y, " at dim ", i, ")"));
    out[i] = x == 1 ? y : x;
  }
  return out;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  if (dim < lo || dim > hi)
    throw ValueError(detail::concat(op, ": dim ", dim, " is out of range for a tensor with ", ndim,
                                    " dims (expected ", lo, "..", hi, ")"));
  return dim < 0 ? dim + std::max<int64_t>(ndim, 1) : dim;
}

}  // namespace loom
