// Copy with dtype conversion between strided CPU buffers, and fill.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace loom::kernels::cpu {

// dst[i] = convert(src[i]) over `ndim` dims of `sizes`; strides in elements (src strides may
// be 0 for broadcast dims).
void copy_strided(int64_t ndim, const int64_t* sizes, void* dst, DType dst_dtype,
                  const int64_t* dst_strides, const void* src, DType src_dtype,
                  const int64_t* src_strides);

// Contiguous conversion of n elements (no aliasing).
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);

// dst[i] = value for every element of a strided buffer.
void fill_strided(int64_t ndim, const int64_t* sizes, void* dst, DType dtype,
                  const int64_t* strides, double value);

}  // namespace loom::kernels::cpu
