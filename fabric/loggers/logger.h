// The logger interface Fabric talks to (Fabric::log / log_dict and the loggers option).
//
// A logger records scalar metrics per step and, optionally, a flat set of hyperparameters.
// It is not thread-safe and does not know about ranks: Fabric calls loggers from global rank
// zero only, so implementations never coordinate between processes.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace loom {

class LogDir;

class Logger {
 public:
  virtual ~Logger() = default;

  // The experiment name, e.g. the folder under the root directory.
  virtual std::string name() const = 0;
  // Records `metrics` (metric name -> value) at `step`. One call is one row/event.
  virtual void log_metrics(const std::map<std::string, double>& metrics, int64_t step) = 0;
  // Records hyperparameters (name -> value as text); later calls add to or overwrite earlier
  // ones. Loggers that have nowhere to put them ignore them.
  virtual void log_hyperparams(const std::map<std::string, std::string>& /*params*/) {}
  // Flushes and closes whatever the logger holds open. Logging again afterwards is allowed
  // and reopens.
  virtual void finalize() {}
  // The <root_dir>/<name>/version_N folder of a logger that writes to one (log_dir.h), else
  // null. Fabric uses it to give the loggers of one run one folder, on every rank.
  virtual LogDir* versioned_dir() { return nullptr; }
};

}  // namespace loom
