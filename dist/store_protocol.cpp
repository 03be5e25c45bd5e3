// Encoding and decoding of store frames; see store_protocol.h for the layout.
#include "dist/store_protocol.h"

namespace loom::dist::protocol {

uint32_t read_u32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
}

void append_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string encode_i64(int64_t v) {
  std::string out;
  auto u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
  return out;
}

std::optional<int64_t> decode_i64(std::string_view bytes) {
  if (bytes.size() != 8) return std::nullopt;
  uint64_t u = 0;
  for (int i = 0; i < 8; ++i) u |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  return static_cast<int64_t>(u);
}

std::string encode_frame(uint8_t code, const std::vector<std::string_view>& fields) {
  std::size_t body = 1 + 4;
  for (auto f : fields) body += 4 + f.size();
  std::string out;
  out.reserve(kFrameHeaderBytes + body);
  append_u32(out, static_cast<uint32_t>(body));
  out.push_back(static_cast<char>(code));
  append_u32(out, static_cast<uint32_t>(fields.size()));
  for (auto f : fields) {
    append_u32(out, static_cast<uint32_t>(f.size()));
    out.append(f);
  }
  return out;
}

std::optional<Message> decode_body(std::string_view body) {
  if (body.size() < 5) return std::nullopt;
  Message msg;
  msg.code = static_cast<uint8_t>(body[0]);
  uint32_t count = read_u32(body.data() + 1);
  if (count > kMaxKeysPerRequest) return std::nullopt;
  std::size_t pos = 5;
  msg.fields.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (body.size() - pos < 4) return std::nullopt;
    uint32_t len = read_u32(body.data() + pos);
    pos += 4;
    if (body.size() - pos < len) return std::nullopt;
    msg.fields.emplace_back(body.substr(pos, len));
    pos += len;
  }
  if (pos != body.size()) return std::nullopt;
  return msg;
}

}  // namespace loom::dist::protocol
