// TensorBoardLogger: scalar metrics as TensorBoard event files in
// <root_dir>/<name>/version_N/, readable by `tensorboard --logdir <root_dir>`.
//
// Each log_metrics call becomes one event holding one scalar per metric (simple_value, which
// TensorBoard shows under the Scalars tab). Hyperparameters go to hparams.yaml in the same
// folder, not to TensorBoard's hparams plugin, whose protobufs this logger does not encode.
// The event file is created on the first log, so only the rank that logs makes one.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "fabric/loggers/event_file.h"
#include "fabric/loggers/log_dir.h"
#include "fabric/loggers/logger.h"

namespace loom {

class TensorBoardLogger : public Logger {
 public:
  explicit TensorBoardLogger(std::string root_dir, std::string name = "loom_logs",
                             std::optional<int> version = std::nullopt);

  std::string name() const override { return dir_.name(); }
  // Both claim the version folder on first use (see log_dir.h).
  int version() const { return dir_.version(); }
  std::string log_dir() const { return dir_.path(); }
  // The event file being written, or "" before the first log and after finalize().
  std::string event_file_path() const { return writer_ ? writer_->path() : std::string(); }

  void log_metrics(const std::map<std::string, double>& metrics, int64_t step) override;
  void log_hyperparams(const std::map<std::string, std::string>& params) override;
  // Closes the event file; logging again starts a new one in the same folder (TensorBoard
  // reads all the files of a folder as one run).
  void finalize() override;
  LogDir* versioned_dir() override { return &dir_; }

 private:
  LogDir dir_;
  std::unique_ptr<EventFileWriter> writer_;
  std::map<std::string, std::string> hparams_;
};

}  // namespace loom
