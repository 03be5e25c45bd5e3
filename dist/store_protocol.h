// Wire format of the TCP rendezvous store, shared by its server and its client.
//
// A frame is a 4-byte little-endian body length followed by the body. A request body is a
// 1-byte opcode, a 4-byte field count, then each field as a 4-byte length and its bytes; a
// response body is the same with a status byte in place of the opcode. Keys and values are
// opaque bytes. Length prefixes make parsing a bounds check rather than a search, and the
// limits below are what the server enforces before buffering anything: a peer announcing a
// bigger frame, or a body whose fields do not add up, is disconnected.
//
// This is not a general RPC layer: no versioning beyond the hello magic, no compression,
// no pipelining guarantees (the client sends one request and waits for its reply).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loom::dist::protocol {

inline constexpr std::size_t kMaxKeyBytes = 4096;
inline constexpr std::size_t kMaxValueBytes = std::size_t{64} << 20;  // 64 MiB
inline constexpr std::size_t kMaxKeysPerRequest = 4096;
// Largest value plus one key plus headers; multi-key requests must also fit in it.
inline constexpr std::size_t kMaxFrameBytes = kMaxValueBytes + kMaxKeyBytes + 64;
inline constexpr std::size_t kFrameHeaderBytes = 4;
// First request on every connection; lets the client tell "not a loom store" apart from a
// protocol error, and lets the server drop strangers (port scanners, wrong services) early.
inline constexpr std::string_view kHelloMagic = "loom-tcpstore-v1";

enum class Op : uint8_t {
  kHello = 1,    // [magic]                -> ok
  kSet = 2,      // [key, value]           -> ok
  kGet = 3,      // [key]                  -> ok [value] | not_found
  kAdd = 4,      // [key, int64 delta]     -> ok [int64 new value] | error (not an integer)
  kCheck = 5,    // [keys...]              -> ok [u8 all present]
  kWait = 6,     // [keys...]              -> ok, sent once every key exists
  kDelete = 7,   // [key]                  -> ok [u8 existed]
  kNumKeys = 8,  // []                     -> ok [int64 count]
};

enum class Status : uint8_t { kOk = 0, kNotFound = 1, kError = 2 };

// A decoded request (code = opcode) or response (code = status).
struct Message {
  uint8_t code = 0;
  std::vector<std::string> fields;
};

// Encodes a whole frame (length prefix included).
std::string encode_frame(uint8_t code, const std::vector<std::string_view>& fields);

// Decodes a frame body; nullopt when it is malformed (truncated field, trailing bytes, more
// than kMaxKeysPerRequest fields).
std::optional<Message> decode_body(std::string_view body);

uint32_t read_u32(const char* p);
void append_u32(std::string& out, uint32_t v);
std::string encode_i64(int64_t v);
// nullopt unless `bytes` is exactly 8 bytes.
std::optional<int64_t> decode_i64(std::string_view bytes);

// Reserved key prefix for the store's own bookkeeping (see Note [Reserved keys] in
// tcp_store.h); num_keys() does not count these keys.
inline constexpr std::string_view kReservedPrefix = "__loom_store/";

}  // namespace loom::dist::protocol
