// CRC-32C (Castagnoli): the checksum TFRecord framing (TensorBoard event files) uses.
//
// Reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF; check value
// crc32c("123456789") == 0xE3069283. Table-driven, one byte per step: log records are small,
// so neither slicing-by-8 nor the SSE4.2 crc32 instruction would pay for their complexity.
#pragma once

#include <cstddef>
#include <cstdint>

namespace loom {

// CRC-32C of `size` bytes at `data`. To checksum data arriving in pieces, pass the previous
// result as `crc`: crc32c(b, nb, crc32c(a, na)) == crc32c of a followed by b.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace loom
