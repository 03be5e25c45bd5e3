// safetensors writer and validating reader (see safetensors.h for the format and contract).
#include "fabric/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "fabric/io/atomic_file.h"
#include "fabric/io/crc32c.h"
#include "core/error.h"

namespace loom {

// Tensor bytes are written as they lie in memory and safetensors stores little-endian data, so a
// big-endian port would need a byte-swapping pass here; none of our targets is big-endian.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

namespace {

// ordered_json keeps the header's key order, which is the order names() reports.
using Json = nlohmann::ordered_json;

constexpr std::array<std::pair<const char*, size_t>, 8> kDtypes = {{
    {"F64", 8},
    {"F32", 4},
    {"F16", 2},
    {"BF16", 2},
    {"I64", 8},
    {"I32", 4},
    {"U8", 1},
    {"BOOL", 1},
}};

constexpr const char* kMetadataKey = "__metadata__";

std::string supported_dtypes() {
  std::string out;
  for (const auto& [code, size] : kDtypes) out += (out.empty() ? "" : " ") + std::string(code);
  return out;
}

// Element size, or 0 for an unsupported code.
size_t dtype_size_or_zero(const std::string& dtype) {
  for (const auto& [code, size] : kDtypes)
    if (dtype == code) return size;
  return 0;
}

// prod(shape) * element_size, or false when that does not fit in a size_t.
bool checked_nbytes(const std::vector<int64_t>& shape, size_t element_size, size_t* out) {
  size_t n = element_size;
  for (int64_t dim : shape)
    if (__builtin_mul_overflow(n, static_cast<size_t>(dim), &n)) return false;
  *out = n;
  return true;
}

// A JSON value for a message: scalars and short flat arrays as JSON, anything else by its type
// and size (dump() of a deeply nested value recurses once per level).
std::string brief(const Json& v) {
  if (v.is_primitive()) return v.dump();
  bool flat = v.size() <= 16;
  for (const Json& x : v)
    if (!x.is_primitive()) flat = false;
  if (flat) return v.dump();
  return detail::concat(v.is_array() ? "an array" : "an object", " of ", v.size(), " elements");
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

std::vector<std::byte> read_whole_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw RuntimeError(detail::concat("cannot open checkpoint '", path, "': ", std::strerror(errno),
                                      "; check the path"));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw RuntimeError(detail::concat("cannot read checkpoint '", path,
                                      "': it is not a regular file; give the path of a "
                                      ".safetensors file"));
  }
  std::vector<std::byte> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      int err = got < 0 ? errno : 0;
      ::close(fd);
      throw RuntimeError(detail::concat(
          "reading checkpoint '", path, "' failed after ", done, " of ", bytes.size(),
          " bytes: ", err ? std::strerror(err) : "the file shrank while being read",
          "; make sure no other process is writing it"));
    }
    done += static_cast<size_t>(got);
  }
  ::close(fd);
  return bytes;
}

class HeaderParser {
 public:
  explicit HeaderParser(const std::string& path) : path_(path) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw ValueError(detail::concat("checkpoint '", path_, "' ", what));
  }
  [[noreturn]] void fail_entry(const std::string& name, const std::string& what) const {
    throw ValueError(detail::concat("checkpoint '", path_, "': entry '", name, "' ", what,
                                    "; the file is corrupt or was not written as safetensors"));
  }

  // Parses the JSON text, reporting top-level duplicate names (which JSON parsers otherwise
  // resolve silently by keeping one of the values).
  Json parse(std::string_view text) const {
    std::string duplicate;
    std::set<std::string> seen;
    auto callback = [&](int depth, nlohmann::detail::parse_event_t event, Json& parsed) {
      if (depth == 1 && event == nlohmann::detail::parse_event_t::key && duplicate.empty() &&
          !seen.insert(parsed.get<std::string>()).second)
        duplicate = parsed.get<std::string>();
      return true;
    };
    Json header;
    try {
      header = Json::parse(text.begin(), text.end(), callback);
    } catch (const Json::exception& e) {
      // parse_error for bad syntax, out_of_range for a number that overflows a double (1e400).
      fail(detail::concat("has a header that is not valid JSON (", e.what(),
                          "); the file is corrupt or not a safetensors file"));
    }
    if (!header.is_object())
      fail("has a JSON header that is not an object; the file is not a safetensors file");
    if (!duplicate.empty()) fail_entry(duplicate, "appears more than once in the header");
    return header;
  }

  std::map<std::string, std::string> metadata(const Json& value) const {
    if (!value.is_object())
      fail("has a \"__metadata__\" that is not an object of strings; the file is corrupt");
    std::map<std::string, std::string> out;
    for (const auto& [key, v] : value.items()) {
      if (!v.is_string())
        fail(detail::concat("has metadata key '", key, "' whose value is not a string (", brief(v),
                            "); safetensors metadata maps strings to strings"));
      out[key] = v.get<std::string>();
    }
    return out;
  }

  SafetensorsFile::Info entry(const std::string& name, const Json& value) const {
    if (!value.is_object()) fail_entry(name, "is not a JSON object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!value.contains(field)) fail_entry(name, detail::concat("has no \"", field, "\""));

    SafetensorsFile::Info info;
    const Json& dtype = value["dtype"];
    if (!dtype.is_string()) fail_entry(name, "has a \"dtype\" that is not a string");
    info.dtype = dtype.get<std::string>();
    size_t element_size = dtype_size_or_zero(info.dtype);
    if (element_size == 0)
      throw ValueError(detail::concat("checkpoint '", path_, "': entry '", name, "' has dtype '",
                                      info.dtype, "', which loom does not support (supported: ",
                                      supported_dtypes(), "); convert it before loading"));

    const Json& shape = value["shape"];
    if (!shape.is_array()) fail_entry(name, "has a \"shape\" that is not an array");
    for (const Json& dim : shape) {
      if (!dim.is_number_unsigned() ||
          dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail_entry(name, detail::concat("has shape ", brief(shape),
                                        ", whose dims must be non-negative integers"));
      info.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
    }

    const Json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned() || offsets[0].get<uint64_t>() > offsets[1].get<uint64_t>())
      fail_entry(name, detail::concat("has data_offsets ", brief(offsets),
                                      ", which must be [begin, end] with 0 <= begin <= end"));
    uint64_t begin = offsets[0].get<uint64_t>();
    uint64_t end = offsets[1].get<uint64_t>();
    info.offset = static_cast<size_t>(begin);
    info.nbytes = static_cast<size_t>(end - begin);

    size_t expected = 0;
    // The dims other than 0 must multiply to a byte count that fits an int64 as well: an empty
    // tensor is still given strides (tensor/shape.cpp), which are products of those dims.
    std::vector<int64_t> nonzero;
    for (int64_t dim : info.shape)
      if (dim != 0) nonzero.push_back(dim);
    size_t strided = 0;
    if (!checked_nbytes(info.shape, element_size, &expected) ||
        !checked_nbytes(nonzero, element_size, &strided) ||
        strided > static_cast<size_t>(std::numeric_limits<int64_t>::max()))
      fail_entry(name, detail::concat("has shape ", shape_str(info.shape),
                                      ", whose size in bytes overflows"));
    if (expected != info.nbytes)
      fail_entry(name, detail::concat("has data_offsets [", begin, ", ", end, "] spanning ",
                                      info.nbytes, " bytes, but ", info.dtype, " of shape ",
                                      shape_str(info.shape), " needs ", expected, " bytes"));
    return info;
  }

  // Checks that the entries' byte ranges tile [0, data_size) exactly.
  void layout(const std::vector<std::string>& names,
              const std::vector<SafetensorsFile::Info>& infos, size_t data_size) const {
    std::vector<size_t> order(infos.size());
    std::iota(order.begin(), order.end(), size_t{0});
    // Empty tensors sort before the tensor that starts where they sit, so they never advance
    // the cursor and are accepted anywhere on a boundary.
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const auto& x = infos[a];
      const auto& y = infos[b];
      return std::pair(x.offset, x.offset + x.nbytes) < std::pair(y.offset, y.offset + y.nbytes);
    });
    size_t cursor = 0;
    const std::string* previous = nullptr;
    for (size_t i : order) {
      const auto& info = infos[i];
      if (info.offset > cursor)
        fail_entry(names[i], detail::concat("starts at byte ", info.offset,
                                            " of the data section, leaving bytes [", cursor, ", ",
                                            info.offset, ") unused: offsets must leave no holes"));
      if (info.offset < cursor)
        fail_entry(names[i], detail::concat("starts at byte ", info.offset, ", inside entry '",
                                            previous ? *previous : std::string(),
                                            "' which ends at byte ", cursor, ": offsets overlap"));
      cursor = info.offset + info.nbytes;
      previous = &names[i];
    }
    if (cursor > data_size)
      fail(detail::concat("is truncated: header says ", cursor, " bytes of data, file has ",
                          data_size,
                          "; it was probably not fully written (save it again or "
                          "use an earlier checkpoint)"));
    if (cursor < data_size)
      fail(detail::concat("has ", data_size - cursor,
                          " bytes after the last tensor that no entry covers (header says ", cursor,
                          " bytes of data, file has ", data_size,
                          "); the file is corrupt or was appended to"));
  }

 private:
  const std::string& path_;
};

// Header checksums (see "Header checksum" in safetensors.h).
constexpr size_t kCrcSearchWindow = 256;  // bytes after the length field searched for the key
constexpr std::string_view kCrcZeros = "00000000";

std::string crc_key_pattern() { return detail::concat("\"", kSafetensorsHeaderCrcKey, "\":\""); }

std::string hex8(uint32_t v) {
  char out[9];
  std::snprintf(out, sizeof out, "%08x", v);
  return out;
}

uint32_t header_crc(std::span<const std::byte> head, size_t digits_at) {
  uint32_t crc = crc32c(head.data(), digits_at);
  crc = crc32c(kCrcZeros.data(), kCrcZeros.size(), crc);
  size_t after = digits_at + kCrcZeros.size();
  return crc32c(head.data() + after, head.size() - after, crc);
}

// Returns whether the file carries a header checksum; throws when it does and it fails.
bool verify_header_checksum(const std::vector<std::byte>& bytes, const std::string& path) {
  const std::string pattern = crc_key_pattern();
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | std::to_integer<uint64_t>(bytes[i]);
  // Inside the header text when its length is plausible (so tensor bytes that happen to hold
  // the pattern are never taken for it); with a length past the end of the file, the first
  // bytes after the length field, so that a damaged length is still reported as damage.
  size_t searched = header_len <= bytes.size() - 8 ? static_cast<size_t>(header_len) : bytes.size() - 8;
  std::string_view window(reinterpret_cast<const char*>(bytes.data()) + 8,
                          std::min(searched, kCrcSearchWindow));
  size_t at = window.find(pattern);
  if (at == std::string_view::npos) return false;
  // From here on the file says it carries a checksum (the pattern occurs nowhere else in a
  // valid header), so anything wrong with it is damage.
  auto corrupt = [&](const std::string& what) {
    throw ValueError(detail::concat("the header of checkpoint '", path, "' is corrupt: ", what,
                                    "; the file was damaged after it was written (use an "
                                    "earlier checkpoint or a backup copy)"));
  };
  size_t digits_at = 8 + at + pattern.size();  // from the start of the file
  if (digits_at + 9 > bytes.size()) corrupt("it ends inside its checksum");
  std::string_view digits(reinterpret_cast<const char*>(bytes.data()) + digits_at, 8);
  bool hex = static_cast<char>(bytes[digits_at + 8]) == '"';
  for (char c : digits) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!hex) corrupt("its checksum is not 8 lowercase hex digits in quotes");
  if (header_len > bytes.size() - 8 || 8 + header_len < digits_at + 9)
    corrupt(detail::concat("its length field says ", header_len, " bytes of JSON, but ",
                           bytes.size() - 8, " bytes follow it and its checksum ends at byte ",
                           digits_at + 9));
  uint32_t stored = static_cast<uint32_t>(std::stoul(std::string(digits), nullptr, 16));
  uint32_t actual = header_crc({bytes.data(), static_cast<size_t>(8 + header_len)}, digits_at);
  if (stored != actual)
    corrupt(detail::concat("its CRC-32C is ", hex8(actual), " but the header records ",
                           hex8(stored)));
  return true;
}

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  size_t size = dtype_size_or_zero(dtype);
  if (size == 0)
    throw ValueError(detail::concat("safetensors dtype '", dtype, "' is not supported; use one of ",
                                    supported_dtypes()));
  return size;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  return from_bytes(read_whole_file(path), path);
}

SafetensorsFile SafetensorsFile::from_bytes(std::vector<std::byte> bytes_in, const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  file.bytes_ = std::move(bytes_in);
  HeaderParser parser(path);
  const auto& bytes = file.bytes_;

  if (bytes.size() < 8)
    parser.fail(detail::concat("is too short to be a safetensors file: ", bytes.size(),
                               " bytes, less than the 8-byte header length; it was probably not "
                               "fully written"));
  file.header_checksum_verified_ = verify_header_checksum(bytes, path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | std::to_integer<uint64_t>(bytes[i]);
  if (header_len > bytes.size() - 8)
    parser.fail(detail::concat("is truncated: header length says ", header_len,
                               " bytes of JSON, file has ", bytes.size() - 8,
                               " after the length; it was probably not fully written, or it is "
                               "not a safetensors file"));
  file.data_start_ = 8 + static_cast<size_t>(header_len);

  std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, header_len);
  Json header = parser.parse(text);
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      file.metadata_ = parser.metadata(value);
      if (file.header_checksum_verified_) file.metadata_.erase(kSafetensorsHeaderCrcKey);
      continue;
    }
    file.index_[name] = file.names_.size();
    file.names_.push_back(name);
    file.infos_.push_back(parser.entry(name, value));
  }
  parser.layout(file.names_, file.infos_, bytes.size() - file.data_start_);
  return file;
}

const SafetensorsFile::Info& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    std::string listed;
    for (size_t i = 0; i < names_.size() && i < 10; ++i) listed += (i ? ", " : "") + names_[i];
    if (names_.size() > 10) listed += ", ...";
    throw ValueError(detail::concat("checkpoint '", path_, "' has no tensor '", name, "'; it has ",
                                    names_.size(), " tensors: ", listed,
                                    ". Check the name (has() tests for presence)"));
  }
  return infos_[it->second];
}

std::span<const std::byte> SafetensorsFile::data(const std::string& name) const {
  const Info& i = info(name);
  return {bytes_.data() + data_start_ + i.offset, i.nbytes};
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata,
                       SafetensorsWriteOptions options) {
  auto fail = [&](const std::string& name, const std::string& what) {
    throw ValueError(detail::concat("write_safetensors('", path, "'): entry '", name, "' ", what));
  };
  if (metadata.count(kSafetensorsHeaderCrcKey))
    throw ValueError(detail::concat("write_safetensors('", path, "'): metadata key '",
                                    kSafetensorsHeaderCrcKey, "' is reserved for the header "
                                    "checksum; pass header_checksum = true instead"));
  std::set<std::string> seen;
  std::vector<size_t> element_sizes;
  for (const auto& e : entries) {
    if (e.name.empty()) fail(e.name, "has an empty name; give every tensor a name");
    if (e.name == kMetadataKey)
      fail(e.name, "uses the name reserved for the metadata block; rename the tensor");
    if (!seen.insert(e.name).second)
      fail(e.name, "appears more than once; tensor names must be unique");
    size_t size = dtype_size_or_zero(e.dtype);
    if (size == 0)
      fail(e.name, detail::concat("has dtype '", e.dtype, "'; use one of ", supported_dtypes()));
    for (int64_t dim : e.shape)
      if (dim < 0) fail(e.name, detail::concat("has negative dim in shape ", shape_str(e.shape)));
    size_t expected = 0;
    if (!checked_nbytes(e.shape, size, &expected))
      fail(e.name, detail::concat("has shape ", shape_str(e.shape), " whose size overflows"));
    if (e.nbytes != expected)
      fail(e.name, detail::concat("has nbytes ", e.nbytes, " but ", e.dtype, " of shape ",
                                  shape_str(e.shape), " needs ", expected,
                                  "; pass a contiguous buffer of exactly that size"));
    if (e.nbytes > 0 && e.data == nullptr)
      fail(e.name, detail::concat("has no data pointer for its ", e.nbytes, " bytes"));
    element_sizes.push_back(size);
  }

  // Data order: by descending element size, so with the 8-aligned data start each tensor is
  // aligned to its element size (readers may then view the bytes in place). Stable, so equal
  // sizes keep the caller's order.
  std::vector<size_t> data_order(entries.size());
  std::iota(data_order.begin(), data_order.end(), size_t{0});
  std::stable_sort(data_order.begin(), data_order.end(),
                   [&](size_t a, size_t b) { return element_sizes[a] > element_sizes[b]; });
  std::vector<size_t> offsets(entries.size());
  size_t cursor = 0;
  for (size_t i : data_order) {
    offsets[i] = cursor;
    cursor += entries[i].nbytes;
  }

  Json header = Json::object();
  if (options.header_checksum || !metadata.empty()) {
    Json meta = Json::object();
    // First, so that it sits at a fixed place near the start (see "Header checksum").
    if (options.header_checksum) meta[kSafetensorsHeaderCrcKey] = std::string(kCrcZeros);
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    header[e.name] = {{"dtype", e.dtype},
                      {"shape", e.shape},
                      {"data_offsets", {offsets[i], offsets[i] + e.nbytes}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::type_error&) {
    // dump() refuses strings that are not UTF-8, which JSON (and so safetensors) requires.
    throw ValueError(detail::concat("write_safetensors('", path, "'): a tensor name or metadata ",
                                    "string is not valid UTF-8; JSON headers need UTF-8 text"));
  }
  // Spaces are JSON whitespace, so padding keeps the header valid while aligning the data.
  text.resize((text.size() + 7) / 8 * 8, ' ');

  std::array<std::byte, 8> length{};
  for (size_t i = 0; i < 8; ++i)
    length[i] = static_cast<std::byte>((text.size() >> (8 * i)) & 0xff);

  if (options.header_checksum) {
    std::string head(reinterpret_cast<const char*>(length.data()), length.size());
    head += text;
    const std::string pattern = crc_key_pattern();
    size_t at = head.find(pattern, 8);
    if (at == std::string::npos || at + pattern.size() > 8 + kCrcSearchWindow)
      throw RuntimeError("write_safetensors: the header checksum key is not where readers look "
                         "for it (a bug in loom)");
    size_t digits_at = at + pattern.size();
    text.replace(digits_at - 8, 8,
                 hex8(header_crc(std::as_bytes(std::span<const char>(head)), digits_at)));
  }

  std::vector<std::span<const std::byte>> pieces;
  pieces.emplace_back(length);
  pieces.push_back(std::as_bytes(std::span<const char>(text.data(), text.size())));
  for (size_t i : data_order)
    if (entries[i].nbytes > 0)
      pieces.emplace_back(static_cast<const std::byte*>(entries[i].data), entries[i].nbytes);
  write_file_atomically(path, pieces);
}

}  // namespace loom
