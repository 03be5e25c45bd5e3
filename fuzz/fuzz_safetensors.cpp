// libFuzzer target: SafetensorsFile on arbitrary bytes.
//
// Oracles, besides the sanitizers: the reader either refuses with loom::ValueError or
// returns a file whose invariant holds (every entry's bytes inside the data section, sized
// shape x dtype, the entries tiling the data section exactly, each name once); an accepted
// file written again by write_safetensors reads back the same (names, dtypes, shapes, bytes
// and metadata), with and without a header checksum.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fabric/io/safetensors.h"
#include "core/error.h"

namespace {

using namespace loom;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_safetensors: ORACLE FAILED: %s\n", what.c_str());
  std::abort();
}

// A scratch file for the round trips, removed at exit.
struct Scratch {
  std::string path;
  Scratch() {
    const char* shm = "/dev/shm";
    std::string base = ::access(shm, W_OK) == 0 ? shm : std::filesystem::temp_directory_path().string();
    path = base + "/loom_fuzz_safetensors_" + std::to_string(::getpid()) + ".safetensors";
  }
  ~Scratch() { std::remove(path.c_str()); }
};

const std::string& scratch_path() {
  static Scratch scratch;
  return scratch.path;
}

void check_invariant(const SafetensorsFile& f, size_t file_size) {
  std::set<std::string> seen;
  size_t total = 0;
  for (const auto& name : f.names()) {
    if (!seen.insert(name).second) fail("name listed twice: " + name);
    if (!f.has(name)) fail("has() denies a listed name");
    const auto& info = f.info(name);
    size_t n = safetensors_dtype_size(info.dtype);
    for (int64_t d : info.shape) {
      if (d < 0) fail("negative dim");
      n *= size_t(d);
    }
    if (n != info.nbytes) fail("nbytes is not shape x dtype for " + name);
    auto data = f.data(name);
    if (data.size() != info.nbytes) fail("data() size differs from info");
    total += info.nbytes;
    if (info.offset + info.nbytes > file_size) fail("entry past the end of the file");
  }
  if (total > file_size) fail("entries cover more than the file");
}

void check_round_trip(const SafetensorsFile& f, bool checksum) {
  std::vector<SafetensorsEntry> entries;
  for (const auto& name : f.names()) {
    const auto& info = f.info(name);
    auto d = f.data(name);
    entries.push_back({name, info.dtype, info.shape, d.empty() ? nullptr : d.data(), d.size()});
  }
  write_safetensors(scratch_path(), entries, f.metadata(), {.header_checksum = checksum});
  SafetensorsFile g = SafetensorsFile::open(scratch_path());
  if (g.names() != f.names()) fail("round trip changed the names");
  if (g.metadata() != f.metadata()) fail("round trip changed the metadata");
  if (g.header_checksum_verified() != checksum) fail("round trip lost the header checksum");
  for (const auto& name : f.names()) {
    const auto& a = f.info(name);
    const auto& b = g.info(name);
    auto da = f.data(name), db = g.data(name);
    if (a.dtype != b.dtype || a.shape != b.shape || da.size() != db.size() ||
        (da.size() && std::memcmp(da.data(), db.data(), da.size()) != 0))
      fail("round trip changed tensor " + name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  std::optional<SafetensorsFile> file;
  try {
    file.emplace(SafetensorsFile::from_bytes(std::move(bytes), "fuzz-input"));
  } catch (const ValueError&) {
    return 0;  // refused: fine, as long as nothing else escapes
  }
  check_invariant(*file, size);
  // What the writer refuses by design: the reserved metadata key, an empty tensor name.
  if (file->metadata().count(kSafetensorsHeaderCrcKey) || file->has("")) return 0;
  check_round_trip(*file, false);
  check_round_trip(*file, true);
  return 0;
}
