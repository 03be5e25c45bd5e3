// latest_checkpoint(dir): the checkpoint a restarted job resumes from (docs/design.md
// "Elastic restart").
//
//   if (auto path = loom::latest_checkpoint("ckpts")) fabric.load(*path, state);
//
// Order: by the step number in the name. An entry's step is the last run of decimal digits in
// its name once the extension (from the last '.') is removed: "step-000120.safetensors" and
// "epoch=2-step=120.safetensors" are step 120, the directory "step-120" too; entries whose
// name has no digits are not checkpoints. The name, not the modification time, decides: times
// are coarse, copies reset them, and a job that saves its steps in its names has the right
// order by construction. Two complete checkpoints of the same step are ambiguous and refused.
//
// Only complete checkpoints count; the others are skipped, so that a save killed with its job
// never becomes the one to resume from:
//   - a file: not an atomic write's temp file ("<name>.tmp.<pid>.<host>.<random>",
//     fabric/io/atomic_file.h), and a safetensors file whose size is exactly what its header
//     says (8 + the header's length + the end of its last tensor). Fabric::save renames a file
//     into place only once it is whole, so this catches files written or copied some other
//     way; the tensors' checksums are verified by load, not here;
//   - a directory (a sharded checkpoint, fabric/sharded_checkpoint.h): it holds index.json,
//     which a sharded save renames into place after every shard file is written.
// Other entries (logs, metrics, notes) are not safetensors files and are skipped the same
// way. Call it on every rank after the job's ranks agree that saves are over (the
// start of a restarted attempt), on a folder every rank sees.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace loom {

// The path ("<dir>/<name>") of the complete checkpoint in `dir` with the highest step, or
// nullopt when `dir` has none or does not exist. Throws ValueError when `dir` is not a
// directory or two complete checkpoints have the same step (naming both), RuntimeError when it
// cannot be read.
std::optional<std::string> latest_checkpoint(const std::string& dir);

// Every complete checkpoint in `dir` as (step, path), by step (ties in name order): what a job
// prunes when it keeps its last few. Empty when `dir` does not exist; errors as above.
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& dir);

}  // namespace loom
