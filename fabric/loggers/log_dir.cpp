// Versioned log folders and hparams.yaml (see log_dir.h).
#include "fabric/loggers/log_dir.h"

#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "fabric/io/atomic_file.h"
#include "tensor/error.h"

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
  version_ = version;
}

int LogDir::version() const {
  resolve();
  return *version_;
}

const std::string& LogDir::path() const {
  resolve();
  return path_;
}

void LogDir::resolve() const {
  if (!path_.empty()) return;
  fs::path parent = name_.empty() ? fs::path(root_dir_) : fs::path(root_dir_) / name_;
  try {
    fs::create_directories(parent);
    if (version_) {
      fs::create_directories(parent / ("version_" + std::to_string(*version_)));
    } else {
      int next = 0;
      for (const auto& entry : fs::directory_iterator(parent))
        if (auto n = parse_version(entry.path().filename().string()); n && entry.is_directory())
          next = std::max(next, *n + 1);
      // create_directory reports whether it made the folder, so two processes starting at
      // once never share a version: the loser moves on to the next number.
      while (!fs::create_directory(parent / ("version_" + std::to_string(next)))) ++next;
      version_ = next;
    }
  } catch (const fs::filesystem_error& e) {
    throw RuntimeError(detail::concat("cannot create the log folder under '", parent.string(),
                                      "': ", e.code().message(),
                                      "; check that root_dir is a writable directory"));
  }
  path_ = (parent / ("version_" + std::to_string(*version_))).string();
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
