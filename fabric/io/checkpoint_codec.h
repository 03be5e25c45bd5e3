// The encodings loom's two checkpoint writers share: the one-file checkpoints of
// fabric/checkpoint.cpp and the sharded directories of fabric/sharded_checkpoint.cpp
// (docs/design.md "Checkpoints").
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/dtype.h"

namespace loom::io {

// A dtype as safetensors names it ("F32", "BF16", "BOOL", ...), and back (nullopt for a code
// loom has no dtype for).
std::string safetensors_dtype(DType t);
std::optional<DType> dtype_of_safetensors(const std::string& code);

// A CRC-32C as the 8 lower-case hex digits the headers store.
std::string hex8(uint32_t v);

// A double in JSON, which has no NaN or infinities: those travel as "nan", "inf", "-inf".
nlohmann::json number_json(double v);
// The inverse: a JSON number, or one of those three strings; nullopt for anything else.
std::optional<double> number_of_json(const nlohmann::json& v);

}  // namespace loom::io
