// Factories: new tensors. A dtype or device not given comes from the thread-local defaults
// (tensor/defaults.h). empty() is lazy: its bytes are allocated on first data access.
#pragma once

#include <initializer_list>
#include <optional>
#include <vector>

#include "tensor/tensor.h"

namespace loom {

using OptDType = std::optional<DType>;
using OptDevice = std::optional<Device>;

Tensor empty(const Shape& shape, OptDType dtype = {}, OptDevice device = {});
Tensor zeros(const Shape& shape, OptDType dtype = {}, OptDevice device = {});
Tensor ones(const Shape& shape, OptDType dtype = {}, OptDevice device = {});
Tensor full(const Shape& shape, Scalar value, OptDType dtype = {}, OptDevice device = {});
Tensor empty_like(const Tensor& t, OptDType dtype = {});
Tensor zeros_like(const Tensor& t, OptDType dtype = {});
Tensor ones_like(const Tensor& t, OptDType dtype = {});
Tensor full_like(const Tensor& t, Scalar value, OptDType dtype = {});
// [start, end) by step; dtype i64 when all three are integral and no dtype is given.
Tensor arange(Scalar end, OptDType dtype = {}, OptDevice device = {});
Tensor arange(Scalar start, Scalar end, Scalar step = 1, OptDType dtype = {}, OptDevice device = {});
Tensor linspace(Scalar start, Scalar end, int64_t steps, OptDType dtype = {}, OptDevice device = {});
Tensor eye(int64_t n, OptDType dtype = {}, OptDevice device = {});
// Uniform [0, 1), standard normal, and integers in [low, high) (i64 by default).
Tensor rand(const Shape& shape, OptDType dtype = {}, OptDevice device = {});
Tensor randn(const Shape& shape, OptDType dtype = {}, OptDevice device = {});
Tensor randint(int64_t low, int64_t high, const Shape& shape, OptDType dtype = {},
               OptDevice device = {});
Tensor rand_like(const Tensor& t);
Tensor randn_like(const Tensor& t);
Tensor randperm(int64_t n, OptDevice device = {});

// From host values, copied. from_vector keeps T's dtype unless told (float -> f32, ...);
// shape defaults to 1-D (pass Shape{} for a 0-dim tensor of one value).
template <class T>
Tensor from_vector(const std::vector<T>& values, std::optional<Shape> shape = {}, OptDType dtype = {},
                   OptDevice device = {});
template <>
Tensor from_vector(const std::vector<bool>& values, std::optional<Shape> shape, OptDType dtype,
                   OptDevice device);
// tensor({1.0, 2.0}) is the default floating dtype; tensor({1, 2}) is i64; bools are bool.
Tensor tensor(std::initializer_list<double> values, OptDType dtype = {}, OptDevice device = {});
Tensor tensor(std::initializer_list<int> values, OptDType dtype = {}, OptDevice device = {});
Tensor tensor(std::initializer_list<int64_t> values, OptDType dtype = {}, OptDevice device = {});
Tensor scalar_tensor(Scalar value, OptDType dtype = {}, OptDevice device = {});

}  // namespace loom
