// Tensor metadata, raw data access and printing. The differentiable methods live in
// autograd/ (Note [Op layers]).
#include "tensor/tensor.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "tensor/native.h"

namespace loom {

void Tensor::throw_undefined() {
  throw ValueError("use of an undefined Tensor (default-constructed or moved-from); "
                   "create it with a factory such as zeros() first");
}

void Tensor::check_dtype_is(DType expected, const char* op) const {
  if (dtype() != expected)
    throw ValueError(detail::concat(op, ": tensor has dtype ", dtype(), " but ", expected,
                                    " was requested; convert with .to(DType::", expected,
                                    ") first"));
}

int64_t Tensor::size(int64_t d) const { return sizes()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : sizes()) n *= s;
  return n;
}

bool Tensor::is_contiguous() const {
  const TensorImpl& t = checked();
  if (numel() == 0) return true;  // no element is out of place (as PyTorch)
  int64_t expected = 1;
  for (size_t i = t.sizes.size(); i-- > 0;) {
    if (t.sizes[i] == 1) continue;
    if (t.strides[i] != expected) return false;
    expected *= t.sizes[i];
  }
  return true;
}

void* Tensor::raw_data_ptr() const {
  const TensorImpl& t = checked();
  if (t.storage->device().is_meta())
    throw RuntimeError(detail::concat("cannot read the data of a meta tensor of shape ",
                                      shape_str(t.sizes), " (", t.dtype,
                                      "): it lives on meta and holds no bytes; move it with "
                                      ".to(Device::cpu()) or materialise the module first"));
  if (t.storage->is_released()) [[unlikely]]
    throw RuntimeError(t.storage->refusal(t.offset));
  char* base = static_cast<char*>(t.storage->data());
  return base + t.offset * int64_t(dtype_size(t.dtype));
}

double Tensor::item_double() const {
  if (numel() != 1)
    throw ValueError(detail::concat("item: the tensor has ", numel(), " elements (shape ",
                                    shape_str(sizes()), "); item() needs exactly one"));
  Tensor c = is_cpu() ? *this : native::to(*this, Device::cpu(), dtype());
  return visit_dtype(dtype(), [&](auto z) {
    using T = decltype(z);
    return to_double(*static_cast<const T*>(c.raw_data_ptr()));
  });
}

double Tensor::at_double(const Shape& index) const {
  if (int64_t(index.size()) != dim())
    throw ValueError(detail::concat("at: index has ", index.size(), " entries for a tensor with ",
                                    dim(), " dims"));
  // A tensor off the CPU is read through a contiguous host copy, so the element offset comes
  // from the strides of the tensor actually read.
  Tensor c = is_cpu() ? *this : native::to(*this, Device::cpu(), dtype());
  int64_t off = 0;
  for (int64_t i = 0; i < dim(); ++i) {
    int64_t j = index[i] < 0 ? index[i] + sizes()[i] : index[i];
    if (j < 0 || j >= sizes()[i])
      throw ValueError(detail::concat("at: index ", index[i], " is out of range for dim ", i,
                                      " of size ", sizes()[i]));
    off += j * c.strides()[i];
  }
  return visit_dtype(dtype(), [&](auto z) {
    using T = decltype(z);
    return to_double(static_cast<const T*>(c.raw_data_ptr())[off]);
  });
}

std::vector<double> Tensor::to_double_vector() const {
  Tensor c = native::to(*this, Device::cpu(), DType::f64);
  c = native::contiguous(c);
  const double* p = static_cast<const double*>(c.raw_data_ptr());
  return std::vector<double>(p, p + numel());
}

bool Tensor::allclose(const Tensor& other, double rtol, double atol) const {
  if (sizes() != other.sizes()) return false;
  std::vector<double> a = to_double_vector(), b = other.to_double_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return false;
    if (a[i] == b[i]) continue;  // equal infinities
    // An infinity is close only to itself: inf - (-inf) is not within atol + rtol * inf.
    if (std::isinf(a[i]) || std::isinf(b[i])) return false;
    if (std::abs(a[i] - b[i]) > atol + rtol * std::abs(b[i])) return false;
  }
  return true;
}

bool Tensor::equal(const Tensor& other) const {
  return sizes() == other.sizes() && to_double_vector() == other.to_double_vector();
}

namespace {

void print_values(std::ostream& os, const std::vector<double>& v, const Shape& sizes,
                  size_t dim, int64_t& pos, bool integral, int indent) {
  if (dim == sizes.size()) {
    if (integral) os << int64_t(v[pos]);
    else os << std::setprecision(4) << v[pos];
    ++pos;
    return;
  }
  os << '[';
  int64_t n = sizes[dim];
  constexpr int64_t kEdge = 3;  // elements shown at each end of a long dim
  // Rows of an inner dim go one per line, aligned under the first.
  std::string sep = dim + 1 < sizes.size() ? ",\n" + std::string(indent + 1, ' ') : ", ";
  for (int64_t i = 0; i < n; ++i) {
    if (n > 2 * kEdge + 1 && i == kEdge) {
      os << "..." << sep;
      int64_t inner = 1;
      for (size_t d = dim + 1; d < sizes.size(); ++d) inner *= sizes[d];
      pos += (n - 2 * kEdge) * inner;
      i = n - kEdge - 1;
      continue;
    }
    print_values(os, v, sizes, dim + 1, pos, integral, indent + 1);
    if (i + 1 < n) os << sep;
  }
  os << ']';
}

}  // namespace

std::string Tensor::str() const {
  std::ostringstream os;
  if (!defined()) return "Tensor(undefined)";
  os << "Tensor(";
  if (is_meta() || (!is_materialized() && numel() > 0)) {
    os << (is_meta() ? "<meta>" : "<not materialised>");
  } else {
    int64_t pos = 0;
    print_values(os, to_double_vector(), sizes(), 0, pos, !is_floating(dtype()), 7);
  }
  os << ", shape=" << shape_str(sizes()) << ", dtype=" << dtype() << ", device=" << device();
  if (requires_grad()) os << ", requires_grad";
  os << ')';
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace loom
