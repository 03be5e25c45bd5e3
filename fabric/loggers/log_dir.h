// The on-disk layout file-based loggers share: <root_dir>/<name>/version_<N>/, plus the
// hparams.yaml written into it.
//
// The directory is claimed lazily, on the first call that needs it, so that a logger built on
// every rank but used only on rank zero creates one folder, not one per rank. It is not a
// general run registry: nothing is recorded beyond the folder itself.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace loom {

class LogDir {
 public:
  // `name` may be empty (then the version folders sit directly in root_dir). With `version`
  // unset the next free version_N is claimed (N = 1 + the highest existing, 0 when none); with
  // it set, that folder is used as is (created if needed), so a resumed run appends to it.
  LogDir(std::string root_dir, std::string name, std::optional<int> version);

  const std::string& root_dir() const { return root_dir_; }
  const std::string& name() const { return name_; }
  // These claim (create) the folder on first call; filesystem failures throw
  // loom::RuntimeError.
  int version() const;
  const std::string& path() const;

 private:
  void resolve() const;

  std::string root_dir_;
  std::string name_;
  // Resolution is a cache of where we are logging, not observable state, hence mutable.
  mutable std::optional<int> version_;
  mutable std::string path_;
};

// Writes `params` as a flat YAML mapping to `path`, atomically. Keys and values are emitted as
// double-quoted JSON strings, which YAML 1.2 reads as the same strings whatever they contain.
void write_hparams_yaml(const std::string& path, const std::map<std::string, std::string>& params);

}  // namespace loom
