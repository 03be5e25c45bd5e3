// Shape helpers: sizes and strides are std::vector<int64_t>, strides counted in elements.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace loom {

using Shape = std::vector<int64_t>;  // sizes, outermost first

// Product of sizes; throws ValueError on a negative size or int64 overflow.
int64_t shape_numel(const Shape& sizes);
// Row-major strides for `sizes`, in elements.
Shape contiguous_strides(const Shape& sizes);
// "[2, 3]"
std::string shape_str(const Shape& sizes);
// The broadcast of two shapes (numpy rules); throws ValueError naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Wraps a possibly negative dim into [0, ndim); throws ValueError naming `op` otherwise.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

}  // namespace loom
