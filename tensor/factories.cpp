#include "tensor/factories.h"

#include <cmath>

#include "tensor/defaults.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {
DType float_or(OptDType d) { return d.value_or(default_dtype()); }
Device device_or(OptDevice d) { return d.value_or(default_device()); }
}  // namespace

Tensor empty(const Shape& shape, OptDType dtype, OptDevice device) {
  return native::empty(shape, float_or(dtype), device_or(device));
}

Tensor full(const Shape& shape, Scalar value, OptDType dtype, OptDevice device) {
  Tensor t = empty(shape, dtype, device);
  native::fill_(t, value);
  return t;
}
Tensor zeros(const Shape& shape, OptDType dtype, OptDevice device) {
  return full(shape, 0.0, dtype, device);
}
Tensor ones(const Shape& shape, OptDType dtype, OptDevice device) {
  return full(shape, 1.0, dtype, device);
}

Tensor empty_like(const Tensor& t, OptDType dtype) {
  return native::empty(t.sizes(), dtype.value_or(t.dtype()), t.device());
}
Tensor zeros_like(const Tensor& t, OptDType dtype) {
  return full(t.sizes(), 0.0, dtype.value_or(t.dtype()), t.device());
}
Tensor ones_like(const Tensor& t, OptDType dtype) {
  return full(t.sizes(), 1.0, dtype.value_or(t.dtype()), t.device());
}
Tensor full_like(const Tensor& t, Scalar value, OptDType dtype) {
  return full(t.sizes(), value, dtype.value_or(t.dtype()), t.device());
}

Tensor arange(Scalar end, OptDType dtype, OptDevice device) {
  return arange(0, end, 1, dtype, device);
}

Tensor arange(Scalar start, Scalar end, Scalar step, OptDType dtype, OptDevice device) {
  if (step == 0) throw ValueError("arange: step must be nonzero");
  if ((end - start) / step < 0)
    throw ValueError(detail::concat("arange: the range [", start, ", ", end, ") with step ", step,
                                    " is empty in the wrong direction"));
  bool integral = std::floor(start) == start && std::floor(end) == end && std::floor(step) == step;
  DType dt = dtype.value_or(integral ? DType::i64 : default_dtype());
  int64_t n = int64_t(std::ceil((end - start) / step));
  // Meta gets its shape only: no host buffer of n values (Note [Meta tensors]).
  if (device_or(device).is_meta()) return native::empty({n}, dt, Device::meta());
  Tensor host = native::empty({n}, DType::f64, Device::cpu());
  if (n > 0) {
    double* p = host.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) p[i] = start + double(i) * step;
  }
  return native::to(host, device_or(device), dt);
}

Tensor linspace(Scalar start, Scalar end, int64_t steps, OptDType dtype, OptDevice device) {
  if (steps < 0) throw ValueError(detail::concat("linspace: steps must be >= 0, got ", steps));
  if (device_or(device).is_meta()) return native::empty({steps}, float_or(dtype), Device::meta());
  Tensor host = native::empty({steps}, DType::f64, Device::cpu());
  if (steps == 1) host.data_ptr<double>()[0] = start;  // one point is `start` (as PyTorch)
  if (steps > 1) {
    double* p = host.data_ptr<double>();
    double h = (end - start) / double(steps - 1);
    // Fill from both ends (as PyTorch) so that the last value is exactly `end`.
    for (int64_t i = 0; i < steps; ++i)
      p[i] = i < steps / 2 ? start + h * double(i) : end - h * double(steps - 1 - i);
  }
  return native::to(host, device_or(device), float_or(dtype));
}

Tensor eye(int64_t n, OptDType dtype, OptDevice device) {
  Tensor t = zeros({n, n}, dtype, device);
  if (n > 0 && !t.is_meta()) native::fill_(native::as_strided(t, {n}, {n + 1}, 0), 1.0);
  return t;
}

Tensor rand(const Shape& shape, OptDType dtype, OptDevice device) {
  Tensor t = empty(shape, dtype, device);
  fill_uniform(t, 0.0, 1.0);
  return t;
}
Tensor randn(const Shape& shape, OptDType dtype, OptDevice device) {
  Tensor t = empty(shape, dtype, device);
  fill_normal(t, 0.0, 1.0);
  return t;
}
Tensor randint(int64_t low, int64_t high, const Shape& shape, OptDType dtype, OptDevice device) {
  Tensor t = native::empty(shape, dtype.value_or(DType::i64), device_or(device));
  fill_randint(t, low, high);
  return t;
}
Tensor rand_like(const Tensor& t) { return rand(t.sizes(), t.dtype(), t.device()); }
Tensor randn_like(const Tensor& t) { return randn(t.sizes(), t.dtype(), t.device()); }

Tensor randperm(int64_t n, OptDevice device) {
  if (n < 0) throw ValueError(detail::concat("randperm: n must be >= 0, got ", n));
  if (device_or(device).is_meta()) return native::empty({n}, DType::i64, Device::meta());
  // Fisher-Yates driven by seeded integers: one randint per position.
  Tensor keys = native::empty({n}, DType::i64, Device::cpu());
  Tensor out = native::empty({n}, DType::i64, Device::cpu());
  if (n > 0) {
    fill_randint(keys, 0, std::numeric_limits<int64_t>::max());
    int64_t* k = keys.data_ptr<int64_t>();
    int64_t* p = out.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = i;
    for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[k[i] % (i + 1)]);
  }
  return native::to(out, device_or(device), DType::i64);
}

template <class T>
Tensor from_vector(const std::vector<T>& values, std::optional<Shape> shape_opt, OptDType dtype, OptDevice device) {
  Shape shape = shape_opt.value_or(Shape{int64_t(values.size())});
  if (shape_numel(shape) != int64_t(values.size()))
    throw ValueError(detail::concat("from_vector: ", values.size(),
                                    " values do not fill shape ", shape_str(shape)));
  Tensor host = native::empty(shape, dtype_of<T>(), Device::cpu());
  if (!values.empty()) {
    T* p = host.data_ptr<T>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  }
  return native::to(host, device_or(device), dtype.value_or(dtype_of<T>()));
}

template Tensor from_vector(const std::vector<double>&, std::optional<Shape>, OptDType, OptDevice);
template Tensor from_vector(const std::vector<float>&, std::optional<Shape>, OptDType, OptDevice);
template Tensor from_vector(const std::vector<int64_t>&, std::optional<Shape>, OptDType, OptDevice);
template Tensor from_vector(const std::vector<int32_t>&, std::optional<Shape>, OptDType, OptDevice);
template Tensor from_vector(const std::vector<uint8_t>&, std::optional<Shape>, OptDType, OptDevice);
template Tensor from_vector(const std::vector<Half>&, std::optional<Shape>, OptDType, OptDevice);
template Tensor from_vector(const std::vector<BFloat16>&, std::optional<Shape>, OptDType, OptDevice);

// std::vector<bool> is packed: copy through bytes.
template <>
Tensor from_vector(const std::vector<bool>& values, std::optional<Shape> shape, OptDType dtype, OptDevice device) {
  std::vector<uint8_t> bytes(values.begin(), values.end());
  return from_vector(bytes, shape, dtype.value_or(DType::bool_), device);
}

Tensor tensor(std::initializer_list<double> values, OptDType dtype, OptDevice device) {
  return from_vector(std::vector<double>(values), {}, float_or(dtype), device);
}
Tensor tensor(std::initializer_list<int> values, OptDType dtype, OptDevice device) {
  std::vector<int64_t> v(values.begin(), values.end());
  return from_vector(v, {}, dtype.value_or(DType::i64), device);
}
Tensor tensor(std::initializer_list<int64_t> values, OptDType dtype, OptDevice device) {
  return from_vector(std::vector<int64_t>(values), {}, dtype.value_or(DType::i64), device);
}
Tensor scalar_tensor(Scalar value, OptDType dtype, OptDevice device) {
  return full({}, value, dtype, device);
}

}  // namespace loom
