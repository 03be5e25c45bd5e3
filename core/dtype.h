// DType: the element types loom tensors hold, their sizes, names and promotion rules.
//
// f16 and bf16 are stored as 16 bits and computed in f32 on the CPU (docs/design.md "Tensor").
// Promotion follows PyTorch for tensor-tensor arithmetic: bool < integers < floating, and
// within a category the wider type wins; f16 with bf16 promotes to f32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

#include "core/half.h"

namespace loom {

enum class DType : uint8_t { f64, f32, f16, bf16, i64, i32, u8, bool_ };

inline constexpr DType kAllDTypes[] = {DType::f64, DType::f32, DType::f16,  DType::bf16,
                                       DType::i64, DType::i32, DType::u8, DType::bool_};

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64: case DType::i64: return 8;
    case DType::f32: case DType::i32: return 4;
    case DType::f16: case DType::bf16: return 2;
    case DType::u8: case DType::bool_: return 1;
  }
  return 0;
}
constexpr bool is_floating(DType t) {
  return t == DType::f64 || t == DType::f32 || t == DType::f16 || t == DType::bf16;
}
constexpr bool is_low_precision(DType t) { return t == DType::f16 || t == DType::bf16; }
constexpr bool is_integral(DType t, bool include_bool = true) {
  return t == DType::i64 || t == DType::i32 || t == DType::u8 || (include_bool && t == DType::bool_);
}

std::string_view dtype_name(DType t);                // "f32"
DType dtype_from_name(std::string_view name);        // accepts "f32", "float32", "float", ...
std::ostream& operator<<(std::ostream& os, DType t);

// Result dtype of a binary arithmetic op on tensors of these dtypes.
DType promote_types(DType a, DType b);

// The C++ type for a dtype, for kernels and tests: CType<DType::f32> is float.
template <DType D> struct CTypeOf;
template <> struct CTypeOf<DType::f64> { using type = double; };
template <> struct CTypeOf<DType::f32> { using type = float; };
template <> struct CTypeOf<DType::f16> { using type = Half; };
template <> struct CTypeOf<DType::bf16> { using type = BFloat16; };
template <> struct CTypeOf<DType::i64> { using type = int64_t; };
template <> struct CTypeOf<DType::i32> { using type = int32_t; };
template <> struct CTypeOf<DType::u8> { using type = uint8_t; };
template <> struct CTypeOf<DType::bool_> { using type = bool; };
template <DType D> using CType = typename CTypeOf<D>::type;

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<Half>() { return DType::f16; }
template <> constexpr DType dtype_of<BFloat16>() { return DType::bf16; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<bool>() { return DType::bool_; }

// Calls fn(T{}) with T the C++ type of `t` (Half/BFloat16 for the 16-bit floats).
template <class Fn>
decltype(auto) visit_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::f64: return fn(double{});
    case DType::f32: return fn(float{});
    case DType::f16: return fn(Half{});
    case DType::bf16: return fn(BFloat16{});
    case DType::i64: return fn(int64_t{});
    case DType::i32: return fn(int32_t{});
    case DType::u8: return fn(uint8_t{});
    case DType::bool_: return fn(bool{});
  }
  return fn(float{});
}

// Scalar conversion between any C++ element type and double / float, 16-bit floats included.
template <class T> inline double to_double(T v) { return static_cast<double>(v); }
template <> inline double to_double(Half v) { return f16_to_f32(v.bits); }
template <> inline double to_double(BFloat16 v) { return bf16_to_f32(v.bits); }
template <class T> inline T from_double(double v) { return static_cast<T>(v); }
template <> inline Half from_double(double v) { return Half{f32_to_f16(float(v))}; }
template <> inline BFloat16 from_double(double v) { return BFloat16{f32_to_bf16(float(v))}; }
template <> inline bool from_double(double v) { return v != 0.0; }

}  // namespace loom
