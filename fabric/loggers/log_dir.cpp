// Versioned log folders and hparams.yaml (see log_dir.h).
#include "fabric/loggers/log_dir.h"

#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "fabric/io/atomic_file.h"
#include "core/error.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

// N for a folder named exactly "version_N", else nullopt.
std::optional<int> parse_version(const std::string& folder) {
  constexpr std::string_view prefix = "version_";
  if (folder.size() <= prefix.size() || folder.compare(0, prefix.size(), prefix) != 0)
    return std::nullopt;
  int n = 0;
  const char* first = folder.data() + prefix.size();
  const char* last = folder.data() + folder.size();
  auto [end, ec] = std::from_chars(first, last, n);
  if (ec != std::errc() || end != last || n < 0) return std::nullopt;
  return n;
}

}  // namespace

LogDir::LogDir(std::string root_dir, std::string name, std::optional<int> version)
    : root_dir_(std::move(root_dir)), name_(std::move(name)) {
  if (version && *version < 0)
    throw ValueError(detail::concat("log version must be >= 0, got ", *version,
                                    "; leave it unset to take the next free version"));
  slot_->version = version;
}

int LogDir::version() const {
  resolve();
  return *slot_->version;
}

const std::string& LogDir::path() const {
  resolve();
  return slot_->path;
}

std::optional<int> LogDir::known_version() const { return slot_->version; }

std::string LogDir::parent_key() const {
  fs::path p = (fs::absolute(root_dir_) / name_).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "root/" and "root" are one folder
  return p.string();
}

bool LogDir::same_parent(const LogDir& other) const { return parent_key() == other.parent_key(); }

void LogDir::share_version_with(LogDir& other) {
  if (!same_parent(other))
    throw ValueError(detail::concat("LogDir: only loggers with the same root_dir and name share a "
                                    "version; '", parent_key(), "' and '", other.parent_key(),
                                    "' differ"));
  if (slot_ == other.slot_) return;
  std::optional<int> mine = slot_->version, theirs = other.slot_->version;
  if (mine && theirs && *mine != *theirs)
    throw ValueError(detail::concat("LogDir: '", parent_key(), "': one logger uses version ", *mine,
                                    " and the other version ", *theirs,
                                    "; give both the same version, or neither"));
  if (!theirs && mine) other.slot_ = slot_;  // keep the folder already known
  else slot_ = other.slot_;
}

void LogDir::pin_version(int version) {
  if (version < 0)
    throw ValueError(detail::concat("log version must be >= 0, got ", version));
  if (slot_->version == version) return;
  slot_->version = version;
  slot_->path.clear();  // resolved again, into the pinned folder
}

void LogDir::resolve() const {
  if (!slot_->path.empty()) return;
  fs::path parent = name_.empty() ? fs::path(root_dir_) : fs::path(root_dir_) / name_;
  try {
    fs::create_directories(parent);
    if (slot_->version) {
      fs::create_directories(parent / ("version_" + std::to_string(*slot_->version)));
    } else {
      int next = 0;
      for (const auto& entry : fs::directory_iterator(parent))
        if (auto n = parse_version(entry.path().filename().string()); n && entry.is_directory())
          next = std::max(next, *n + 1);
      // create_directory reports whether it made the folder, so two processes starting at
      // once never share a version: the loser moves on to the next number.
      while (!fs::create_directory(parent / ("version_" + std::to_string(next)))) ++next;
      slot_->version = next;
    }
  } catch (const fs::filesystem_error& e) {
    throw RuntimeError(detail::concat("cannot create the log folder under '", parent.string(),
                                      "': ", e.code().message(),
                                      "; check that root_dir is a writable directory"));
  }
  slot_->path = (parent / ("version_" + std::to_string(*slot_->version))).string();
}

void write_hparams_yaml(const std::string& path, const std::map<std::string, std::string>& params) {
  // Invalid UTF-8 is replaced rather than refused: losing a hyperparameter's odd byte beats
  // failing the run over it.
  auto quote = [](const std::string& s) {
    return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  std::string text;
  for (const auto& [key, value] : params) text += quote(key) + ": " + quote(value) + "\n";
  if (params.empty()) text = "{}\n";
  write_file_atomically(path, text);
}

}  // namespace loom
