// CRC-32C (Castagnoli): the checksum of TFRecord framing (TensorBoard event files) and of
// checkpoint tensors and headers (fabric/checkpoint.h).
//
// Reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF; check value
// crc32c("123456789") == 0xE3069283. crc32c() runs the SSE4.2 crc32 instruction, 8 bytes a
// step, on CPUs that have it (every x86-64 CPU since 2008; checked once at run time), which
// keeps checksumming a multi-GB checkpoint well under a second; elsewhere it falls back to
// crc32c_portable(), table-driven, one byte a step. Both give the same value for all inputs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace loom {

// CRC-32C of `size` bytes at `data`. To checksum data arriving in pieces, pass the previous
// result as `crc`: crc32c(b, nb, crc32c(a, na)) == crc32c of a followed by b.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

// The table-driven implementation, whatever the CPU (the reference crc32c() is tested against).
uint32_t crc32c_portable(const void* data, size_t size, uint32_t crc = 0);

}  // namespace loom
