// Sharded checkpoints: Fabric::save / load of a directory in which every rank wrote only what it
// holds, loadable at any world size (docs/design.md "Sharded checkpoints"). The fsdp and
// deepspeed strategies write them with state_dict_type = "sharded"; any strategy (one process
// included) loads them through load_sharded_checkpoint().
//
// Layout of <dir>:
//   shard-<rank>-of-<world>-<token>.safetensors   one per rank of the save: 1-D pieces named as
//                                                 the tensors of a full checkpoint
//                                                 (fabric/checkpoint.h), each with its CRC-32C,
//                                                 under a header checksum
//   index.json                                    written by rank 0 last
//
// Names. A module's tensors are "<key>.<name>" (the module's own names: fsdp's unflattened
// parameter names, not its flat shards). An optimizer's state is keyed by the parameter it
// belongs to, not by its position: "<key>.state.<module key>.<parameter name>.<buffer>", of the
// parameter's shape. So a state saved over fsdp's flat shards, over ZeRO's partitions or over a
// plain model's parameters loads into any of the three: the optimizer's parameters are matched
// to names through the modules of the same state (save and load a model with its optimizer).
//
// index.json: {"index_crc32c": "<8 hex digits>", "format": "loom.sharded", "version": 1,
//   "world_size": W,
//   "files": {"<file>": {"rank": r, "bytes": n}},
//   "tensors": {"<name>": {"dtype": "F32", "shape": [..],
//                          "pieces": [{"file": f, "lo": a, "hi": b, "offset": o, "crc32c": c}]}},
//   "entries": {"<key>": {"kind": "module", "tensors": ["<name>", ...]},
//               "<key>": {"kind": "optimizer",
//                         "param_groups": [{"options": {...}, "params": ["<module key>.<name>"]}],
//                         "state": {"<module key>.<name>": {"step": s, "buffers": [..]}}},
//               (scheduler, tensor, double, int, string: as in fabric/checkpoint.h)},
//   "precision": {...}}
// A piece holds elements [lo, hi) of its tensor flattened (row-major, unpadded); its bytes are
// at byte `offset` of `file`, and the pieces of a tensor tile [0, numel) exactly. The CRC of
// the index is that of its text with its own 8 digits read as "00000000" (the convention of the
// safetensors header checksum, fabric/io/safetensors.h).
//
// Atomicity. Every file is written to a temp file and renamed (fabric/io/atomic_file.h). Shard
// files carry a token new to each save, so a save never overwrites the files an older index
// names: the checkpoint switches when index.json is renamed into place, and only then does
// rank 0 delete the shard files the new index does not name. A failed save (any rank) removes
// its new files and leaves the previous checkpoint of that directory loadable.
//
// Loads read index.json, work out the element ranges this rank needs of every tensor (its
// shard, or the whole tensor where it holds a replica), read those pieces only (whole pieces,
// so that each one's CRC is checked; a load at another world size reads at most one piece more
// per tensor and boundary), and check everything -- shapes, dtypes (strict), missing keys,
// optimizer groups and hyper-parameters, checksums -- before the ranks agree (one collective)
// and only then apply. A refusal on any rank is a ValueError on every rank naming the key or
// file at fault, and changes nothing anywhere.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "dist/process_group.h"
#include "fabric/checkpoint.h"

namespace loom {

// The file a sharded checkpoint directory holds once its save completed (written last).
inline constexpr char kShardedCheckpointIndex[] = "index.json";

struct ShardedCheckpointContext {
  // The ranks that save or load together; null for one process.
  dist::ProcessGroup* group = nullptr;
  // The precision plugin's state, saved with the index.
  std::map<std::string, double> precision_state{};
  // Maps an optimizer of the state to the one whose parameters and state define it (deepspeed:
  // the user's own optimizer to its ZeroOptimizer); empty: the optimizer itself.
  std::function<std::shared_ptr<optim::Optimizer>(const std::shared_ptr<optim::Optimizer>&)>
      resolve_optimizer{};
};

// The state_dict_type values of FSDPOptions and DeepSpeedOptions; ValueError for any other,
// naming `who` ("fsdp") and the valid ones.
void check_state_dict_type(const std::string& type, const char* who);

// Every rank of ctx.group calls it with the same keys. `path` is the directory (created when
// missing; a regular file there is refused).
void save_sharded_checkpoint(const std::string& path, const CheckpointState& state,
                             const ShardedCheckpointContext& ctx);

// Every rank of ctx.group calls it. Strict as load_checkpoint() (fabric/checkpoint.h); returns
// the plain values and tensors the checkpoint has beyond `state`. `precision_state`, when
// given, receives the index's precision state (left as it is when it has none).
CheckpointState load_sharded_checkpoint(const std::string& path, CheckpointState& state,
                                        bool strict, const ShardedCheckpointContext& ctx,
                                        std::map<std::string, double>* precision_state = nullptr);

// Whether `path` is a directory (then loads take it as a sharded checkpoint).
bool is_sharded_checkpoint_path(const std::string& path);

}  // namespace loom
