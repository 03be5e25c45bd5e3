// Tests for fabric/io/safetensors.h and fabric/io/atomic_file.h: round trips, the on-disk layout
// checked against the format spec by independent parsers, refusal of damaged files with useful
// messages, and atomicity of writes that fail.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "fabric/io/atomic_file.h"
#include "fabric/io/crc32c.h"
#include "fabric/io/safetensors.h"
#include "fabric_test_util.h"
#include "core/error.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

using fabric_test::TempDir;
const auto read_bytes = fabric_test::read_text;  // the whole file, bytes as they are

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Builds a file by hand from a header text and a data section, for damaged-file cases.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (size_t i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string open_error(const std::string& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const ValueError& e) {
    return e.what();
  }
  ADD_FAILURE() << "open('" << path << "') did not throw ValueError";
  return {};
}

template <class T>
SafetensorsEntry entry(const std::string& name, const std::string& dtype,
                       std::vector<int64_t> shape, const std::vector<T>& values) {
  return {name, dtype, std::move(shape), values.empty() ? nullptr : values.data(),
          values.size() * sizeof(T)};
}

// A fixed set of tensors covering every dtype, a 0-dim and an empty tensor.
struct Sample {
  std::vector<double> f64{1.5, -2.25, 3.0, 4.0, 5.0, 6.0};            // (2, 3)
  std::vector<float> scalar{42.5f};                                   // ()
  std::vector<uint16_t> f16{0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000};  // (5,) raw bits
  std::vector<uint16_t> bf16{0x3f80, 0x4049, 0xff80};                 // (3, 1) raw bits
  std::vector<int64_t> i64{-1, std::numeric_limits<int64_t>::max()};  // (2,)
  std::vector<int32_t> empty;                                         // (0, 4)
  std::vector<uint8_t> u8{0, 1, 2, 3, 254, 255, 7};                   // (7,)
  std::vector<uint8_t> flags{1, 0, 1};                                // (3,) bool

  std::vector<SafetensorsEntry> entries() const {
    return {entry("layer.weight", "F64", {2, 3}, f64),
            entry("scale", "F32", {}, scalar),
            entry("half", "F16", {5}, f16),
            entry("brain", "BF16", {3, 1}, bf16),
            entry("ids", "I64", {2}, i64),
            entry("nothing", "I32", {0, 4}, empty),
            entry("bytes", "U8", {7}, u8),
            entry("mask", "BOOL", {3}, flags)};
  }
};

TEST(Safetensors, RoundTripsEveryDtypeShapeAndMetadata) {
  TempDir dir;
  Sample s;
  auto entries = s.entries();
  std::map<std::string, std::string> metadata{{"format", "loom"}, {"step", "10"}};
  write_safetensors(dir.file("a.safetensors"), entries, metadata);

  auto file = SafetensorsFile::open(dir.file("a.safetensors"));
  ASSERT_EQ(file.names().size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    EXPECT_EQ(file.names()[i], e.name);  // header order is the order given
    ASSERT_TRUE(file.has(e.name));
    EXPECT_EQ(file.info(e.name).dtype, e.dtype);
    EXPECT_EQ(file.info(e.name).shape, e.shape);
    auto bytes = file.data(e.name);
    ASSERT_EQ(bytes.size(), e.nbytes) << e.name;
    if (e.nbytes > 0) {
      EXPECT_EQ(std::memcmp(bytes.data(), e.data, e.nbytes), 0) << e.name;
    }
  }
  EXPECT_EQ(file.metadata(), metadata);
  EXPECT_FALSE(file.has("missing"));
  EXPECT_EQ(file.data("nothing").size(), 0u);
}

TEST(Safetensors, WritesNoMetadataBlockWhenEmptyAndReadsAnEmptyFile) {
  TempDir dir;
  write_safetensors(dir.file("e.safetensors"), {}, {});
  std::string raw = read_bytes(dir.file("e.safetensors"));
  EXPECT_EQ(raw.size(), 16u);  // length + "{}" padded to 8
  auto file = SafetensorsFile::open(dir.file("e.safetensors"));
  EXPECT_TRUE(file.names().empty());
  EXPECT_TRUE(file.metadata().empty());
}

// Parses the file as the spec describes, without the library's reader.
TEST(Safetensors, LayoutFollowsTheSpec) {
  TempDir dir;
  Sample s;
  auto entries = s.entries();
  write_safetensors(dir.file("a.safetensors"), entries, {{"k", "v"}});
  std::string raw = read_bytes(dir.file("a.safetensors"));

  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(n % 8, 0u) << "header must be padded to a multiple of 8";
  ASSERT_LE(8 + n, raw.size());
  std::string text = raw.substr(8, n);
  EXPECT_EQ(text.front(), '{');
  EXPECT_EQ(text.find_last_not_of(' ') + 1, text.find_last_of('}') + 1);
  auto header = nlohmann::json::parse(text);  // throws if not valid JSON
  EXPECT_EQ(header["__metadata__"]["k"], "v");

  const std::string data = raw.substr(8 + n);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& e : entries) {
    const auto& h = header.at(e.name);
    EXPECT_EQ(h.at("dtype"), e.dtype);
    EXPECT_EQ(h.at("shape").get<std::vector<int64_t>>(), e.shape);
    uint64_t begin = h.at("data_offsets")[0], end = h.at("data_offsets")[1];
    ASSERT_EQ(end - begin, e.nbytes) << e.name;
    ASSERT_LE(end, data.size());
    if (e.nbytes > 0) {
      EXPECT_EQ(std::memcmp(data.data() + begin, e.data, e.nbytes), 0) << e.name;
      // Writer places larger elements first: each tensor is aligned to its element size.
      EXPECT_EQ((8 + n + begin) % safetensors_dtype_size(e.dtype), 0u) << e.name;
    }
    ranges.emplace_back(begin, end);
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t cursor = 0;
  for (auto [begin, end] : ranges) {
    EXPECT_EQ(begin, cursor) << "offsets must tile the data section";
    cursor = end;
  }
  EXPECT_EQ(cursor, data.size());
}

// A second independent reader, in Python with only json + struct, when python3 is present.
TEST(Safetensors, PythonReaderAgrees) {
  if (std::system("python3 -c 'import json, struct' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 not available";
  TempDir dir;
  Sample s;
  write_safetensors(dir.file("a.safetensors"), s.entries(), {{"step", "10"}});
  write_bytes(dir.file("check.py"), R"PY(
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
assert n % 8 == 0, n
header = json.loads(raw[8:8 + n].decode("utf-8"))
data = raw[8 + n:]
assert header.pop("__metadata__") == {"step": "10"}
spans = sorted(tuple(v["data_offsets"]) for v in header.values())
cursor = 0
for b, e in spans:
    assert b == cursor, (b, cursor)
    cursor = e
assert cursor == len(data)
def get(name, fmt):
    b, e = header[name]["data_offsets"]
    return list(struct.unpack("<%d%s" % ((e - b) // struct.calcsize(fmt), fmt), data[b:e]))
assert get("layer.weight", "d") == [1.5, -2.25, 3.0, 4.0, 5.0, 6.0]
assert get("scale", "f") == [42.5] and header["scale"]["shape"] == []
assert get("ids", "q") == [-1, 2**63 - 1]
assert header["nothing"]["shape"] == [0, 4] and get("nothing", "i") == []
assert get("mask", "B") == [1, 0, 1]
)PY");
  std::string cmd = "python3 " + dir.file("check.py") + " " + dir.file("a.safetensors");
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

TEST(Safetensors, RefusesTruncatedFiles) {
  TempDir dir;
  Sample s;
  std::string path = dir.file("x.safetensors");
  write_safetensors(path, s.entries(), {});
  std::string raw = read_bytes(path);

  write_bytes(path, raw.substr(0, raw.size() - 10));
  std::string msg = open_error(path);
  EXPECT_THAT(msg, HasSubstr("checkpoint '" + path + "' is truncated"));
  EXPECT_THAT(msg, HasSubstr("header says"));
  EXPECT_THAT(msg, HasSubstr("probably not fully written"));

  write_bytes(path, raw.substr(0, 40));  // cut inside the JSON header
  EXPECT_THAT(open_error(path), HasSubstr("header length says"));

  write_bytes(path, raw.substr(0, 5));
  EXPECT_THAT(open_error(path), HasSubstr("too short"));

  write_bytes(path, "");
  EXPECT_THAT(open_error(path), HasSubstr("too short"));
}

TEST(Safetensors, RefusesCorruptedHeader) {
  TempDir dir;
  Sample s;
  std::string path = dir.file("x.safetensors");
  write_safetensors(path, s.entries(), {});
  std::string raw = read_bytes(path);
  raw[raw.find(':', 8)] = '#';  // structural damage (damage inside a string goes unnoticed)
  write_bytes(path, raw);
  EXPECT_THAT(open_error(path), HasSubstr("not valid JSON"));

  write_bytes(path, make_file("[1, 2, 3]", ""));
  EXPECT_THAT(open_error(path), HasSubstr("not an object"));
}

TEST(Safetensors, RefusesBadEntries) {
  TempDir dir;
  std::string path = dir.file("x.safetensors");
  std::string data16(16, '\1');
  auto check = [&](const std::string& header, const std::string& data,
                   std::vector<std::string> parts) {
    write_bytes(path, make_file(header, data));
    std::string msg = open_error(path);
    for (const auto& p : parts) EXPECT_THAT(msg, HasSubstr(p)) << header;
  };
  check(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
        std::string(12, '\0'), {"entry 'b'", "overlap", "inside entry 'a'"});
  check(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}})",
        data16, {"entry 'b'", "holes", "[8, 12)"});
  check(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", data16,
        {"8 bytes after the last tensor"});
  check(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", data16,
        {"entry 'a'", "needs 12 bytes"});
  check(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", data16,
        {"entry 'a'", "data_offsets [8,0]"});
  check(R"({"a": {"dtype": "F8_E4M3", "shape": [16], "data_offsets": [0, 16]}})", data16,
        {"entry 'a'", "dtype 'F8_E4M3'", "does not support", "BF16"});
  check(R"({"a": {"dtype": "U8", "shape": [-16], "data_offsets": [0, 16]}})", data16,
        {"entry 'a'", "non-negative"});
  check(R"({"a": {"dtype": "U8", "shape": [16]}})", data16, {"entry 'a'", "data_offsets"});
  check(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
            "a": {"dtype": "U8", "shape": [8], "data_offsets": [8, 16]}})",
        data16, {"entry 'a'", "more than once"});
  check(R"({"__metadata__": {"k": 1}})", "", {"metadata key 'k'", "not a string"});
  check(R"({"a": {"dtype": "U8", "shape": [4294967296, 4294967296, 4294967296],
            "data_offsets": [0, 16]}})",
        data16, {"entry 'a'", "overflows"});
}

TEST(Safetensors, ReportsMissingNamesWithWhatIsThere) {
  TempDir dir;
  Sample s;
  write_safetensors(dir.file("a.safetensors"), s.entries(), {});
  auto file = SafetensorsFile::open(dir.file("a.safetensors"));
  try {
    file.info("layer.bias");
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no tensor 'layer.bias'"));
    EXPECT_THAT(e.what(), HasSubstr("layer.weight"));
  }
  EXPECT_THROW(SafetensorsFile::open(dir.file("absent.safetensors")), RuntimeError);
  EXPECT_EQ(safetensors_dtype_size("BF16"), 2u);
  EXPECT_THROW(safetensors_dtype_size("F128"), ValueError);
}

// Writes a good file, then runs `bad_write`, then checks the good file is untouched and that
// no temp file was left behind.
template <class Error, class F>
void expect_failed_write_keeps_file(const TempDir& dir, F bad_write, const std::string& part) {
  Sample s;
  std::string path = dir.file("model.safetensors");
  write_safetensors(path, s.entries(), {{"epoch", "1"}});
  std::string before = read_bytes(path);
  auto listing = dir.listing();
  try {
    bad_write(path);
    ADD_FAILURE() << "the write did not fail";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(part));
  }
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(dir.listing(), listing);
}

TEST(Safetensors, RejectedWritesLeaveThePreviousFile) {
  TempDir dir;
  std::vector<float> values(4, 1.0f);
  expect_failed_write_keeps_file<ValueError>(
      dir,
      [&](const std::string& path) {
        write_safetensors(path, {entry("w", "F32", {4}, values), entry("b", "F32", {4}, values),
                                 entry("w", "F32", {4}, values)});
      },
      "entry 'w' appears more than once");
  expect_failed_write_keeps_file<ValueError>(
      dir,
      [&](const std::string& path) { write_safetensors(path, {entry("w", "F32", {5}, values)}); },
      "needs 20");
  expect_failed_write_keeps_file<ValueError>(
      dir,
      [&](const std::string& path) { write_safetensors(path, {entry("w", "Q4", {4}, values)}); },
      "dtype 'Q4'");
  expect_failed_write_keeps_file<ValueError>(
      dir,
      [&](const std::string& path) {
        write_safetensors(path, {entry("__metadata__", "F32", {4}, values)});
      },
      "reserved");
  expect_failed_write_keeps_file<ValueError>(
      dir,
      [&](const std::string& path) {
        write_safetensors(path, {}, {{"bad", "\xff\xfe"}});
      },
      "not valid UTF-8");
}

// A real I/O failure halfway through the data: the file size limit makes write(2) fail with
// EFBIG after the first 4 KiB (SIGXFSZ is ignored meanwhile so the process survives).
TEST(Safetensors, WriteFailingMidwayLeavesThePreviousFile) {
  TempDir dir;
  std::vector<double> big(1 << 14, 3.0);  // 128 KiB
  expect_failed_write_keeps_file<RuntimeError>(
      dir,
      [&](const std::string& path) {
        rlimit old{};
        ::getrlimit(RLIMIT_FSIZE, &old);
        rlimit small = old;
        small.rlim_cur = 4096;
        auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
        ::setrlimit(RLIMIT_FSIZE, &small);
        try {
          write_safetensors(path, {entry("big", "F64", {1 << 14}, big)});
        } catch (...) {
          ::setrlimit(RLIMIT_FSIZE, &old);
          ::signal(SIGXFSZ, old_handler);
          throw;
        }
        ::setrlimit(RLIMIT_FSIZE, &old);
        ::signal(SIGXFSZ, old_handler);
      },
      "writing the temp file");
}

TEST(Safetensors, FailedRenameLeavesNoTempFile) {
  TempDir dir;
  fs::create_directory(dir.path() / "taken");
  write_bytes(dir.file("taken/inside"), "x");  // a non-empty directory cannot be renamed over
  std::vector<float> values(4, 1.0f);
  EXPECT_THROW(write_safetensors(dir.file("taken"), {entry("w", "F32", {4}, values)}),
               RuntimeError);
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"taken"});
  EXPECT_THROW(write_safetensors(dir.file("no/such/dir/x.safetensors"), {}), RuntimeError);
}

TEST(Safetensors, UnwritableDirectoryLeavesThePreviousFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  TempDir dir;
  expect_failed_write_keeps_file<RuntimeError>(
      dir,
      [&](const std::string& path) {
        fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
        write_safetensors(path, {});
      },
      "creating the temp file");
  fs::permissions(dir.path(), fs::perms::owner_all);
}

TEST(AtomicFile, ReplacesContentsAndKeepsOrdinaryPermissions) {
  TempDir dir;
  std::string path = dir.file("notes.txt");
  write_file_atomically(path, std::string("first"));
  write_file_atomically(path, std::string("second, longer"));
  EXPECT_EQ(read_bytes(path), "second, longer");
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"notes.txt"});
  mode_t mask = ::umask(0);
  ::umask(mask);
  auto perms = fs::status(path).permissions();
  EXPECT_EQ(static_cast<mode_t>(perms), 0666 & ~mask);
}

// ---- header checksum ----

TEST(Safetensors, HeaderChecksumRoundTripsAndIsLeftOutOfTheMetadata) {
  TempDir dir;
  Sample s;
  std::string path = dir.file("c.safetensors");
  write_safetensors(path, s.entries(), {{"k", "v"}}, {.header_checksum = true});
  auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(file.header_checksum_verified());
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"k", "v"}}));
  // Independently: the CRC-32C of length field + header with the digits read as zeros.
  std::string raw = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  const std::string key = "\"loom.header_crc32c\":\"";
  size_t at = raw.find(key);
  ASSERT_EQ(at, 8u + 17u) << "first key of the metadata";
  std::string head = raw.substr(0, 8 + n);
  std::string digits = head.substr(at + key.size(), 8);
  head.replace(at + key.size(), 8, "00000000");
  char expected[9];
  std::snprintf(expected, sizeof expected, "%08x", crc32c(head.data(), head.size()));
  EXPECT_EQ(digits, expected);
  // Python readers see one more metadata string; the header stays valid JSON.
  auto header = nlohmann::json::parse(raw.substr(8, n));
  EXPECT_EQ(header["__metadata__"]["loom.header_crc32c"], digits);

  EXPECT_THROW(write_safetensors(path, {}, {{"loom.header_crc32c", "0"}}), ValueError);
}

TEST(Safetensors, EveryFlippedHeaderBitIsCaughtByTheHeaderChecksum) {
  TempDir dir;
  std::vector<float> w{1, 2, 3, 4};
  std::string path = dir.file("c.safetensors");
  write_safetensors(path, {entry("w", "F32", {2, 2}, w)}, {{"k", "v"}}, {.header_checksum = true});
  const std::string raw = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  // The key with its quotes, colon and the value's opening quote: what open() looks for.
  const std::string pattern = "\"loom.header_crc32c\":\"";
  const size_t key_begin = raw.find(pattern), key_end = key_begin + pattern.size();
  std::string bad = dir.file("bad.safetensors");
  for (size_t byte = 0; byte < 8 + n; ++byte)
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = raw;
      flipped[byte] ^= static_cast<char>(1 << bit);
      write_bytes(bad, flipped);
      if (byte >= key_begin && byte < key_end) {
        // The key no longer reads as the checksum's: the file is then read as one without
        // (a reader that expects a checksum asks header_checksum_verified()).
        try {
          EXPECT_FALSE(SafetensorsFile::open(bad).header_checksum_verified());
        } catch (const ValueError&) {
        }
        continue;
      }
      EXPECT_THAT(open_error(bad), HasSubstr("the header of checkpoint '" + bad + "' is corrupt"))
          << "byte " << byte << " bit " << bit;
    }
}

// The checksum key is only looked for in the header: tensor bytes holding the same text are
// data, not a checksum to verify.
TEST(Safetensors, TheChecksumKeyInTensorDataIsData) {
  TempDir dir;
  std::string path = dir.file("x.safetensors");
  std::string data = "\"loom.header_crc32c\":\"00000000\"";
  data.resize(40, ' ');
  write_bytes(path, make_file(R"({"a":{"dtype":"U8","shape":[40],"data_offsets":[0,40]}})", data));
  auto f = SafetensorsFile::open(path);
  EXPECT_FALSE(f.header_checksum_verified());
  EXPECT_EQ(f.data("a").size(), 40u);
}

TEST(Safetensors, NumbersOverflowingADoubleAreRefusedAsValueErrors) {
  TempDir dir;
  std::string path = dir.file("x.safetensors");
  write_bytes(path, make_file(R"({"a": {"dtype": "U8", "shape": [1e400], "data_offsets": [0, 1]}})", "x"));
  EXPECT_THAT(open_error(path), AllOf(HasSubstr("not valid JSON"), HasSubstr("1e400")));
}

TEST(Safetensors, EmptyTensorsWithHugeDimsAreRefused) {
  TempDir dir;
  std::string path = dir.file("x.safetensors");
  // No bytes (a dim is 0), but strides would overflow int64.
  write_bytes(path, make_file(R"({"a": {"dtype": "U8", "shape": [0, 4294967296, 4294967296],
                                      "data_offsets": [0, 0]}})", ""));
  EXPECT_THAT(open_error(path), AllOf(HasSubstr("entry 'a'"), HasSubstr("overflows")));
}

// ---- crc32c ----

TEST(Crc32c, HardwareAndTableAgreeOnEveryLengthAndAlignment) {
  std::vector<unsigned char> buf(4096 + 64);
  uint32_t x = 12345;
  for (auto& b : buf) b = static_cast<unsigned char>((x = x * 1103515245u + 12345u) >> 24);
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  for (size_t offset = 0; offset < 9; ++offset)
    for (size_t len = 0; len < 80; ++len)
      ASSERT_EQ(crc32c(buf.data() + offset, len), crc32c_portable(buf.data() + offset, len))
          << offset << " " << len;
  EXPECT_EQ(crc32c(buf.data() + 3, 4096), crc32c_portable(buf.data() + 3, 4096));
  EXPECT_EQ(crc32c(buf.data() + 100, 900, crc32c(buf.data(), 100)), crc32c(buf.data(), 1000));
}

// ---- temp files of interrupted writes ----

// A pid that no process has: a child that has exited and been reaped.
pid_t dead_pid() {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

TEST(AtomicFile, TempFilesAreNamedAfterTheTargetAndTheirWriter) {
  std::string temp = atomic_temp_path("/some/dir/model.safetensors", 1234, 0xabcdefull);
  EXPECT_THAT(temp, ::testing::MatchesRegex(
                        "/some/dir/model\\.safetensors\\.tmp\\.1234\\.[0-9a-f]{8}\\.0000000000abcdef"));
}

TEST(AtomicFile, AWriteRemovesStaleTempFilesOfDeadWritersOnly) {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  std::string dead = atomic_temp_path(path, dead_pid(), 1);
  std::string live = atomic_temp_path(path, ::getppid(), 2);  // our parent is alive
  std::string self = atomic_temp_path(path, ::getpid(), 3);   // another thread's write, maybe
  // A dead pid of another host (or PID namespace): that pid means nothing here.
  std::string other_host = dead;
  std::string tag = fs::path(dead).filename().string().substr(std::string("model.safetensors.tmp.").size());
  tag = tag.substr(tag.find('.') + 1, 8);
  other_host.replace(other_host.find(tag), 8, tag == "00000000" ? "00000001" : "00000000");
  std::string other_target = atomic_temp_path(dir.file("other.safetensors"), dead_pid(), 4);
  for (const auto& p : {dead, live, self, other_host, other_target}) write_bytes(p, "partial");

  write_file_atomically(path, std::string("complete"));
  EXPECT_FALSE(fs::exists(dead)) << "a dead writer's temp file is removed";
  for (const auto& p : {live, self, other_host, other_target}) EXPECT_TRUE(fs::exists(p)) << p;
  EXPECT_EQ(read_bytes(path), "complete");
  EXPECT_EQ(remove_stale_temp_files(path), 0);
}

// The issue's case for real: a writer killed in the middle of a write (here by SIGXFSZ, as
// deterministic as kill -9 at the right moment) leaves its temp file; the next write removes it.
TEST(AtomicFile, TheTempFileOfAKilledWriterIsRemovedByTheNextWrite) {
  TempDir dir;
  std::string path = dir.file("big.safetensors");
  write_file_atomically(path, std::string("old"));
  pid_t child = ::fork();
  if (child == 0) {
    rlimit small{4096, 4096};
    ::signal(SIGXFSZ, SIG_DFL);
    ::setrlimit(RLIMIT_FSIZE, &small);
    write_file_atomically(path, std::string(1 << 16, 'x'));  // killed halfway
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the writer was killed";
  auto listing = dir.listing();
  ASSERT_EQ(listing.size(), 2u) << "the killed writer left its temp file";
  EXPECT_EQ(read_bytes(path), "old") << "and the target is untouched";
  write_file_atomically(path, std::string("new"));
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"big.safetensors"});
  EXPECT_EQ(read_bytes(path), "new");
}

}  // namespace
}  // namespace loom
