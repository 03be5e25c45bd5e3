#include "core/dtype.h"

#include "core/error.h"

namespace loom {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f64: return "f64";
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i64: return "i64";
    case DType::i32: return "i32";
    case DType::u8: return "u8";
    case DType::bool_: return "bool";
  }
  return "?";
}

DType dtype_from_name(std::string_view n) {
  if (n == "f64" || n == "float64" || n == "double") return DType::f64;
  if (n == "f32" || n == "float32" || n == "float") return DType::f32;
  if (n == "f16" || n == "float16" || n == "half") return DType::f16;
  if (n == "bf16" || n == "bfloat16") return DType::bf16;
  if (n == "i64" || n == "int64" || n == "long") return DType::i64;
  if (n == "i32" || n == "int32" || n == "int") return DType::i32;
  if (n == "u8" || n == "uint8") return DType::u8;
  if (n == "bool") return DType::bool_;
  throw ValueError(detail::concat("unknown dtype '", n,
                                  "'; valid: f64, f32, f16, bf16, i64, i32, u8, bool"));
}

std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  auto rank = [](DType t) {
    switch (t) {
      case DType::bool_: return 0;
      case DType::u8: return 1;
      case DType::i32: return 2;
      case DType::i64: return 3;
      case DType::f16: case DType::bf16: return 4;
      case DType::f32: return 5;
      case DType::f64: return 6;
    }
    return 0;
  };
  if (is_low_precision(a) && is_low_precision(b)) return DType::f32;  // f16 vs bf16
  return rank(a) >= rank(b) ? a : b;
}

}  // namespace loom
