// Finding the checkpoint to resume from; the rules are in latest_checkpoint.h.
#include "fabric/latest_checkpoint.h"
#include "fabric/sharded_checkpoint.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "core/error.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

// The safetensors format caps its header at 100 MB; a larger length field is no checkpoint.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// The step in an entry's name (see latest_checkpoint.h), or -1 when it has none.
int64_t step_of(const std::string& name) {
  std::string stem = name;
  if (size_t dot = stem.rfind('.'); dot != std::string::npos && dot > 0) stem.resize(dot);
  size_t end = stem.find_last_of("0123456789");
  if (end == std::string::npos) return -1;
  size_t begin = stem.find_last_not_of("0123456789", end);
  begin = begin == std::string::npos ? 0 : begin + 1;
  std::string digits = stem.substr(begin, end + 1 - begin);
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));
  if (digits.size() > 18) return -1;  // no step of a real job; would overflow int64
  return std::stoll(digits);
}

// Whether `path` is a whole safetensors file: its size is what its header says.
bool is_whole_safetensors_file(const fs::path& path, uint64_t size) {
  if (size < 8) return false;
  std::ifstream in(path, std::ios::binary);
  unsigned char length_bytes[8];
  if (!in.read(reinterpret_cast<char*>(length_bytes), 8)) return false;
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | length_bytes[i];
  if (header_bytes > kMaxHeaderBytes || 8 + header_bytes > size) return false;
  std::string header(header_bytes, '\0');
  if (!in.read(header.data(), std::streamsize(header_bytes))) return false;
  nlohmann::json json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return false;
  uint64_t data_end = 0;
  for (auto& [name, entry] : json.items()) {
    if (name == "__metadata__") continue;
    if (!entry.is_object() || !entry.contains("data_offsets")) return false;
    const nlohmann::json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[1].is_number_unsigned())
      return false;
    data_end = std::max(data_end, offsets[1].get<uint64_t>());
  }
  return size - 8 - header_bytes == data_end;
}

bool is_complete(const fs::directory_entry& entry) {
  std::error_code ec;
  if (entry.is_directory(ec)) return fs::is_regular_file(entry.path() / kShardedCheckpointIndex, ec);
  if (!entry.is_regular_file(ec)) return false;
  // An atomic write's temp file: "<name>.tmp.<pid>.<host>.<random>" (fabric/io/atomic_file.h).
  if (entry.path().filename().string().find(".tmp.") != std::string::npos) return false;
  uint64_t size = entry.file_size(ec);
  return !ec && is_whole_safetensors_file(entry.path(), size);
}

// The complete checkpoints in `dir` as (step, path), in step order; `who` names the caller in
// errors.
std::vector<std::pair<int64_t, std::string>> list_complete(const std::string& dir, const char* who) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  fs::file_status status = fs::status(dir, ec);
  if (status.type() == fs::file_type::not_found) return found;
  if (ec) throw RuntimeError(detail::concat(who, ": cannot read '", dir, "': ", ec.message()));
  if (!fs::is_directory(status))
    throw ValueError(detail::concat(who, ": '", dir, "' is not a directory; pass the folder the "
                                    "checkpoints are saved in"));
  try {
    for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
      int64_t step = step_of(entry.path().filename().string());
      if (step >= 0 && is_complete(entry)) found.emplace_back(step, entry.path().string());
    }
  } catch (const fs::filesystem_error& e) {
    throw RuntimeError(detail::concat(who, ": cannot list '", dir, "': ", e.what()));
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& dir) {
  return list_complete(dir, "complete_checkpoints");
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  auto found = list_complete(dir, "latest_checkpoint");
  if (found.empty()) return std::nullopt;
  const auto& [step, best] = found.back();
  if (found.size() > 1 && found[found.size() - 2].first == step)
    throw ValueError(detail::concat(
        "latest_checkpoint: '", found[found.size() - 2].second, "' and '", best,
        "' are both complete checkpoints of step ", step, "; keep one, or give each "
        "checkpoint its own step number in its name"));
  return best;
}

}  // namespace loom
