// CSVLogger: metrics to <root_dir>/<name>/version_N/metrics.csv, hyperparameters to
// hparams.yaml next to it.
//
// metrics.csv has one header row, `step` first and then every metric name in first-seen order,
// and one row per log_metrics call (cells of metrics not logged in that call stay empty).
// When a call brings a new name, the whole file is rewritten with the wider header (old rows
// get empty cells) through a temp file + rename, so a crash leaves either the old or the new
// file. Rows are appended and flushed to the OS per call (not fsynced: that would cost a disk
// round trip per step; a crash of the machine may lose the last rows, never corrupt earlier
// ones). Reopening an existing version (explicit `version`) continues its file.
//
// Not a general CSV writer: metric names may not contain commas, quotes or line breaks, which
// keeps every row a plain line that needs no quoting or parsing.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "fabric/loggers/log_dir.h"
#include "fabric/loggers/logger.h"

namespace loom {

class CSVLogger : public Logger {
 public:
  explicit CSVLogger(std::string root_dir, std::string name = "loom_logs",
                     std::optional<int> version = std::nullopt);
  ~CSVLogger() override;
  CSVLogger(const CSVLogger&) = delete;
  CSVLogger& operator=(const CSVLogger&) = delete;

  std::string name() const override { return dir_.name(); }
  // Both claim the version folder on first use (see log_dir.h).
  int version() const { return dir_.version(); }
  std::string log_dir() const { return dir_.path(); }
  std::string metrics_path() const;

  // Throws loom::ValueError for a metric name that is empty, is "step" or contains a comma,
  // quote or line break; loom::RuntimeError when the file cannot be written.
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step) override;
  // Merged into the hyperparameters logged so far and written to hparams.yaml.
  void log_hyperparams(const std::map<std::string, std::string>& params) override;
  void finalize() override;
  LogDir* versioned_dir() override { return &dir_; }

 private:
  // Loads the columns of an existing metrics.csv (a resumed run), once.
  void load_existing();
  // Rewrites metrics.csv with the current columns, padding existing rows.
  void rewrite();
  void open_for_append();
  void close_file();

  LogDir dir_;
  bool loaded_ = false;
  std::vector<std::string> columns_;  // metric names after "step", in first-seen order
  size_t columns_on_disk_ = 0;        // how many of columns_ the file's header has
  bool header_on_disk_ = false;
  std::FILE* file_ = nullptr;  // metrics.csv opened for appending, or null
  std::map<std::string, std::string> hparams_;
};

}  // namespace loom
