// The safetensors checkpoint format: writer and validating reader, on raw bytes.
//
// Layout of a file (https://github.com/huggingface/safetensors, "Format"):
//   [8 bytes]  N, the header length, unsigned little-endian
//   [N bytes]  JSON header: {"__metadata__": {str: str},
//                            "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
//                            ...}
//              padded with spaces so that the data section starts 8-byte aligned
//   [rest]     the data section: each tensor's bytes, row-major, little-endian; data_offsets
//              are relative to the start of this section and tile it exactly (no holes, no
//              overlaps, nothing left over)
//
// Header checksum (loom's extension, opt-in when writing): with header_checksum set,
// write_safetensors() makes "loom.header_crc32c" the first key of "__metadata__" (so the header
// text starts {"__metadata__":{"loom.header_crc32c":"XXXXXXXX",...) with 8 lowercase hex digits:
// the CRC-32C of the file's first 8 + N bytes -- length field and header text, padding
// included -- computed with those 8 digits read as "00000000". open() looks for
// "loom.header_crc32c":"<8 hex digits>" within the first 256 bytes of the header text; when it
// is there the header must match it, or open() refuses the file as corrupt, naming it (a tool
// that rewrites such a header must drop the key).
// Any damage to the header outside those digits changes the CRC, and damage to the digits
// changes the value compared, so every flipped bit of such a header is caught (a flip inside
// the key's own text makes the key unrecognisable instead: a reader that expects a checksum,
// such as fabric/checkpoint.cpp, then asks header_checksum_verified()). In a valid JSON text
// the pattern cannot occur anywhere else: quotes inside strings are escaped, and a tensor name
// is followed by an object, not a string. Other tools see one more metadata string.
//
// This file deliberately knows nothing of loom::Tensor: it works with dtype codes, shapes and
// byte spans, and a glue layer maps Tensors (and their DType) onto it. It is not a streaming or
// lazily-loading reader: open() reads and validates the whole file up front, so every later
// accessor is infallible apart from asking for a name that is not there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace loom {

// One tensor to write. `data` points at `nbytes` bytes laid out row-major in little-endian
// order; nbytes must equal prod(shape) * element size of dtype. A 0-dim tensor has shape {}
// and one element; a tensor with a 0 in its shape has no bytes (data may then be null).
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // a safetensors code: F64 F32 F16 BF16 I64 I32 U8 BOOL
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Element size in bytes of a safetensors dtype code. Throws loom::ValueError for codes loom
// does not support, listing the ones it does.
size_t safetensors_dtype_size(const std::string& dtype);

// Metadata key of the header checksum (see "Header checksum" above); reserved.
inline constexpr const char* kSafetensorsHeaderCrcKey = "loom.header_crc32c";

struct SafetensorsWriteOptions {
  bool header_checksum = false;  // add "loom.header_crc32c" (see "Header checksum" above)
};

// Writes `entries` and `metadata` to `path` atomically (see fabric/io/atomic_file.h): after a
// failure an existing file at `path` is unchanged and no temp file remains.
//
// Everything is validated before a byte is written: unique, non-empty names other than
// "__metadata__", supported dtypes, non-negative dims, nbytes matching shape x dtype.
// Violations throw loom::ValueError naming the entry; I/O failures throw loom::RuntimeError.
//
// The header lists the entries in the given order (and SafetensorsFile::names() returns that
// order). In the data section the entries are placed by descending element size, keeping the
// given order among equals, so that every tensor's bytes are aligned to its element size.
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata = {},
                       SafetensorsWriteOptions options = {});

// A validated safetensors file held in memory.
//
// Invariant: after open() returns, every entry's dtype is supported, its byte range lies inside
// the data section and matches shape x dtype, and the ranges tile the data section exactly.
class SafetensorsFile {
 public:
  struct Info {
    std::string dtype;
    std::vector<int64_t> shape;
    size_t offset = 0;  // in bytes, from the start of the data section
    size_t nbytes = 0;
  };

  // Reads the whole file and validates it (see the invariant), header checksum first when the
  // file has one. Any problem throws loom::ValueError naming the file, the entry when there is
  // one, and what is wrong (a header failing its checksum: "the header of checkpoint '<path>'
  // is corrupt: ..."); a file that cannot be opened or read throws loom::RuntimeError.
  static SafetensorsFile open(const std::string& path);
  // The same from bytes in memory; `path` only names them in messages.
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes, const std::string& path);

  const std::string& path() const { return path_; }
  // Tensor names in header order (for files loom wrote: the order given to write_safetensors).
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // Throws loom::ValueError when the file has no tensor of that name.
  const Info& info(const std::string& name) const;
  // The tensor's bytes; valid as long as this object (or one moved from it) lives.
  std::span<const std::byte> data(const std::string& name) const;
  // The "__metadata__" strings; without "loom.header_crc32c" when that was verified.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // True when the header carried a checksum and matched it (see "Header checksum").
  bool header_checksum_verified() const { return header_checksum_verified_; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  // The whole file. Read in one go rather than mmapped: a checkpoint that another process
  // truncates or rewrites while we hold it then cannot turn into a SIGBUS later.
  std::vector<std::byte> bytes_;
  size_t data_start_ = 0;  // in bytes, from the start of the file: 8 + N
  std::vector<std::string> names_;
  std::vector<Info> infos_;                        // parallel to names_
  std::unordered_map<std::string, size_t> index_;  // name -> position in names_
  std::map<std::string, std::string> metadata_;
  bool header_checksum_verified_ = false;
};

}  // namespace loom
