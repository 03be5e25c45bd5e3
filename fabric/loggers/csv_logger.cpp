// CSVLogger (see csv_logger.h for the file format and durability contract).
#include "fabric/loggers/csv_logger.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fabric/io/atomic_file.h"
#include "core/error.h"

namespace loom {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> split_line(const std::string& line) {
  std::vector<std::string> cells;
  size_t start = 0;
  for (size_t comma; (comma = line.find(',', start)) != std::string::npos; start = comma + 1)
    cells.push_back(line.substr(start, comma - start));
  cells.push_back(line.substr(start));
  return cells;
}

// Shortest text that reads back as the same double (to_chars' round-trip guarantee).
std::string format_value(double value) {
  char buffer[32];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

void check_metric_name(const std::string& name) {
  if (name.empty() || name == "step" || name.find_first_of(",\"\r\n") != std::string::npos)
    throw ValueError(detail::concat(
        "CSVLogger: metric name '", name, "' cannot be a CSV column: names must be non-empty, ",
        "not \"step\" (the step column) and free of commas, quotes and line breaks; rename it"));
}

}  // namespace

CSVLogger::CSVLogger(std::string root_dir, std::string name, std::optional<int> version)
    : dir_(std::move(root_dir), std::move(name), version) {}

CSVLogger::~CSVLogger() { close_file(); }

std::string CSVLogger::metrics_path() const {
  return (std::filesystem::path(dir_.path()) / "metrics.csv").string();
}

void CSVLogger::load_existing() {
  if (loaded_) return;
  loaded_ = true;
  std::string path = metrics_path();
  if (!std::filesystem::exists(path)) return;
  std::string text = read_text(path);
  if (text.empty()) return;
  size_t eol = text.find('\n');
  std::vector<std::string> header = split_line(text.substr(0, eol));
  if (header.empty() || header[0] != "step")
    throw ValueError(detail::concat("CSVLogger: '", path,
                                    "' exists but its header does not start "
                                    "with \"step\"; it was not written by CSVLogger. Move it away "
                                    "or log to another version"));
  columns_.assign(header.begin() + 1, header.end());
  columns_on_disk_ = columns_.size();
  header_on_disk_ = true;
  // A row cut short by a crash would glue onto the next one; drop it.
  if (text.back() != '\n') rewrite();
}

void CSVLogger::rewrite() {
  close_file();
  std::string path = metrics_path();
  std::string text = "step";
  for (const auto& c : columns_) text += "," + c;
  text += "\n";
  if (header_on_disk_) {
    std::string old = read_text(path);
    size_t start = old.find('\n');
    std::string padding(columns_.size() - columns_on_disk_, ',');
    while (start != std::string::npos && start + 1 < old.size()) {
      size_t end = old.find('\n', start + 1);
      if (end == std::string::npos) break;  // an incomplete last row is dropped
      text.append(old, start + 1, end - start - 1);
      text += padding + "\n";
      start = end;
    }
  }
  write_file_atomically(path, text);
  columns_on_disk_ = columns_.size();
  header_on_disk_ = true;
}

void CSVLogger::open_for_append() {
  if (file_) return;
  std::string path = metrics_path();
  file_ = std::fopen(path.c_str(), "ab");
  if (!file_)
    throw RuntimeError(detail::concat("CSVLogger: cannot open '", path, "' for appending: ",
                                      std::strerror(errno), "; check the log folder is writable"));
}

void CSVLogger::close_file() {
  if (file_) std::fclose(file_);
  file_ = nullptr;
}

void CSVLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step) {
  for (const auto& [name, value] : metrics) check_metric_name(name);
  load_existing();
  for (const auto& [name, value] : metrics)
    if (std::find(columns_.begin(), columns_.end(), name) == columns_.end())
      columns_.push_back(name);
  if (!header_on_disk_ || columns_on_disk_ != columns_.size()) rewrite();

  std::string row = std::to_string(step);
  for (const auto& column : columns_) {
    row += ",";
    if (auto it = metrics.find(column); it != metrics.end()) row += format_value(it->second);
  }
  row += "\n";
  open_for_append();
  // One fwrite + fflush per row, so the OS holds whole rows even if this process dies.
  if (std::fwrite(row.data(), 1, row.size(), file_) != row.size() || std::fflush(file_) != 0) {
    int err = errno;
    close_file();
    throw RuntimeError(detail::concat("CSVLogger: writing a row to '", metrics_path(),
                                      "' failed: ", std::strerror(err),
                                      "; check free space on the log folder's disk"));
  }
}

void CSVLogger::log_hyperparams(const std::map<std::string, std::string>& params) {
  for (const auto& [key, value] : params) hparams_[key] = value;
  write_hparams_yaml((std::filesystem::path(dir_.path()) / "hparams.yaml").string(), hparams_);
}

void CSVLogger::finalize() { close_file(); }

}  // namespace loom
