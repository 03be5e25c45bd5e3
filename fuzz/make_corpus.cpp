// Writes the seed corpus of the fuzz targets: small valid checkpoints and safetensors files
// (fuzz/corpus/<target>/, committed). Run: build/fuzz/make_corpus fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "fabric/io/safetensors.h"
#include "fuzz_state.h"
#include "kernels/cpu/parallel.h"

namespace {

using namespace loom;
using json = nlohmann::json;
namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_seed(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  std::printf("%s: %zu bytes\n", path.c_str(), bytes.size());
}

std::string with_flags(uint8_t flags, const std::string& body) { return std::string(1, char(flags)) + body; }

// The loom JSON and "name|DTYPE|dims" lines of a checkpoint (fuzz_state.h, structured mode).
std::pair<std::string, std::string> structured(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  std::string lines;
  for (const auto& n : f.names()) {
    std::string dims;
    for (int64_t d : f.info(n).shape) dims += (dims.empty() ? "" : ",") + std::to_string(d);
    lines += n + "|" + f.info(n).dtype + "|" + dims + "\n";
  }
  return {f.metadata().at("loom"), lines};
}

// The same checkpoint as loom wrote it before checksums (format 1).
void write_format1(const std::string& from, const std::string& to) {
  auto f = SafetensorsFile::open(from);
  json loom = json::parse(f.metadata().at("loom"));
  loom["format"] = 1;
  loom.erase("crc32c");
  for (auto& [key, e] : loom["entries"].items()) {
    e.erase("tensors");
    if (e["kind"] == "optimizer") {
      json steps = json::object();
      for (auto& [idx, s] : e["state"].items()) steps[idx] = s["step"];
      e.erase("state");
      e["steps"] = steps;
    }
  }
  std::vector<SafetensorsEntry> entries;
  for (const auto& n : f.names()) {
    auto d = f.data(n);
    entries.push_back({n, f.info(n).dtype, f.info(n).shape, d.data(), d.size()});
  }
  write_safetensors(to, entries, {{"loom", loom.dump()}});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>  (writes <dir>/checkpoint and <dir>/safetensors)\n", argv[0]);
    return 2;
  }
  set_num_threads(1);
  const fs::path root = argv[1];
  const fs::path ck = root / "checkpoint", st = root / "safetensors";
  fs::create_directories(ck);
  fs::create_directories(st);
  const std::string tmp = (fs::temp_directory_path() / "loom_make_corpus.safetensors").string();
  using namespace fuzz;

  fuzz::State a = make_state(1, 3);
  save_checkpoint(tmp, a.values, {{"scale", 1024.0}, {"growth_factor", 2.0}, {"backoff_factor", 0.5},
                                  {"growth_interval", 2000.0}, {"growth_tracker", 7.0}});
  const std::string file_a = read_file(tmp);
  write_seed(ck / "raw_strict", with_flags(kStrict | kPrecision, file_a));
  auto [text, lines] = structured(tmp);
  write_seed(ck / "structured_strict", with_flags(kStrict | kStructured | kPrecision, text + '\0' + lines));
  write_seed(ck / "structured_reseal", with_flags(kStrict | kStructured | kResealTensors, text));
  write_format1(tmp, tmp + ".1");
  write_seed(ck / "raw_format1", with_flags(kStrict, read_file(tmp + ".1")));

  fuzz::State b = make_state(3, 2, /*amsgrad=*/true);
  CheckpointState extra = b.values;
  extra["note"] = std::string("extra");
  extra["best"] = 0.125;
  extra["ids"] = arange(0.0, 4.0);
  save_checkpoint(tmp, extra);
  write_seed(ck / "raw_nonstrict_extra", with_flags(kPrecision, read_file(tmp)));
  write_seed(st / "checkpoint", read_file(tmp));

  std::vector<float> w{1, 2, 3, 4, 5, 6};
  std::vector<int64_t> ids{7, -8};
  std::vector<uint8_t> mask{1, 0, 1};
  std::vector<SafetensorsEntry> entries{{"w", "F32", {2, 3}, w.data(), 24},
                                        {"ids", "I64", {2}, ids.data(), 16},
                                        {"mask", "BOOL", {3}, mask.data(), 3},
                                        {"none", "F16", {0, 5}, nullptr, 0}};
  write_safetensors(tmp, entries, {{"framework", "pt"}});
  write_seed(st / "plain", read_file(tmp));
  write_safetensors(tmp, entries, {{"framework", "pt"}}, {.header_checksum = true});
  write_seed(st / "checksummed", read_file(tmp));
  write_safetensors(tmp, {}, {});
  write_seed(st / "empty", read_file(tmp));
  fs::remove(tmp);
  fs::remove(tmp + ".1");
  return 0;
}
