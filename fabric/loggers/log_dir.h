// The on-disk layout file-based loggers share: <root_dir>/<name>/version_<N>/, plus the
// hparams.yaml written into it.
//
// The directory is claimed lazily, on the first call that needs it, so that a logger built on
// every rank but used only on rank zero creates one folder, not one per rank. It is not a
// general run registry: nothing is recorded beyond the folder itself.
//
// One run, one folder: a new LogDir without a version claims a new folder (a rerun never
// appends to the last run's files), and the loggers of one run share theirs through
// share_version_with(): Fabric links the loggers it is given that have the same root_dir and
// name, and, with several processes, gives every rank rank zero's version (pin_version).
#pragma once

#include <map>
#include <memory>
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

  // The version if it is known (given, pinned or claimed) without claiming anything.
  std::optional<int> known_version() const;
  // Whether `other` logs to the same <root_dir>/<name> (compared as absolute, normal paths).
  bool same_parent(const LogDir& other) const;
  // Whether the two have one version (share_version_with linked them).
  bool shares_version_with(const LogDir& other) const { return slot_ == other.slot_; }
  // From now on this LogDir and `other` have one version: the one either already knows, else
  // the one whichever of them is used first claims, once, for both. Throws loom::ValueError
  // when they differ in root_dir or name, or already know different versions.
  void share_version_with(LogDir& other);
  // Uses `version` from now on, for every LogDir sharing this one's, without claiming a new
  // folder: the version another process (rank zero) claimed for this run. A folder this
  // process claimed before stays on disk, unused.
  void pin_version(int version);

 private:
  // Where the LogDirs of one run log (share_version_with): the version once known, the
  // folder's path once it exists. Not observable state, hence filled by const calls.
  struct Slot {
    std::optional<int> version;
    std::string path;
  };
  std::string parent_key() const;
  void resolve() const;

  std::string root_dir_;
  std::string name_;
  std::shared_ptr<Slot> slot_ = std::make_shared<Slot>();
};

// Writes `params` as a flat YAML mapping to `path`, atomically. Keys and values are emitted as
// double-quoted JSON strings, which YAML 1.2 reads as the same strings whatever they contain.
void write_hparams_yaml(const std::string& path, const std::map<std::string, std::string>& params);

}  // namespace loom
