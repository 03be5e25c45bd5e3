#include "fabric/io/checkpoint_codec.h"

#include <cmath>
#include <cstdio>
#include <limits>

namespace loom::io {

namespace {
constexpr DType kDTypes[] = {DType::f64, DType::f32, DType::f16,  DType::bf16,
                             DType::i64, DType::i32, DType::u8, DType::bool_};
}  // namespace

std::string safetensors_dtype(DType t) {
  switch (t) {
    case DType::f64: return "F64";
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i64: return "I64";
    case DType::i32: return "I32";
    case DType::u8: return "U8";
    case DType::bool_: return "BOOL";
  }
  return "?";
}

std::optional<DType> dtype_of_safetensors(const std::string& code) {
  for (DType t : kDTypes)
    if (safetensors_dtype(t) == code) return t;
  return std::nullopt;
}

std::string hex8(uint32_t v) {
  char out[9];
  std::snprintf(out, sizeof out, "%08x", v);
  return out;
}

nlohmann::json number_json(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

std::optional<double> number_of_json(const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  if (!v.is_string()) return std::nullopt;
  const auto& s = v.get_ref<const std::string&>();
  if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
  if (s == "inf") return std::numeric_limits<double>::infinity();
  if (s == "-inf") return -std::numeric_limits<double>::infinity();
  return std::nullopt;
}

}  // namespace loom::io
