// Checkpoints: Fabric::save/load of a name -> value map into one safetensors file
// (docs/design.md "Checkpoints").
//
// Layout: tensors are entries named "<key>.<param>" (modules), "<key>.state.<i>.<buffer>"
// (optimizer state of parameter i) or "<key>" (a plain tensor); everything else is JSON in the
// header's "__metadata__" under "loom" (format 2):
//
//   {"format": 2,
//    "entries": {"<key>": {"kind": "module", "tensors": ["<param>", ...]},
//                "<key>": {"kind": "optimizer",
//                          "param_groups": [{"options": {"lr": 0.1, ...}, "params": [0, 1]}],
//                          "state": {"<i>": {"step": 3, "buffers": ["exp_avg", ...]}}},
//                "<key>": {"kind": "scheduler", "last_epoch": 5, "base_lrs": [0.1]},
//                "<key>": {"kind": "tensor"},
//                "<key>": {"kind": "double" | "int" | "string", "value": ...}},
//    "precision": {"scale": 65536, ...},              (the precision plugin's state)
//    "crc32c": {"<tensor name>": <CRC-32C of its bytes>, ...}}
//
// Numbers JSON cannot hold (NaN, +-infinity) are written as the strings "nan", "inf", "-inf".
// Python tools read the tensors with any safetensors reader.
//
// Integrity. Every tensor's bytes have a CRC-32C in "crc32c", and the header as a whole -- the
// length field, every tensor's dtype, shape and offsets, and the loom JSON -- has one in the
// "__metadata__" key "loom.header_crc32c" (fabric/io/safetensors.h, "Header checksum"). A load
// verifies the header checksum, then every tensor's checksum, so any flipped bit of the file
// is refused before anything changes: "the header of checkpoint '<path>' is corrupt: ..." or
// "tensor '<name>' in checkpoint '<path>' is corrupt: ...". Format 1 files (loom before
// checksums: no "crc32c", "steps": {"<i>": step} instead of "state", tensors found by name
// prefix) still load, unverified. Files without loom metadata are refused as not written by
// Fabric::save (SafetensorsFile reads them).
//
// Writes are atomic (temp file, fsync, rename; fabric/io/atomic_file.h): a failed save never
// replaces a good file, and temp files of saves that were killed are removed by later saves.
//
// Loads validate first and apply after: the whole file (checksums, then every entry of the
// loom JSON that is used, with exact types: an integer where an integer belongs, a number
// that fits), and for each key of the state: a module's names, shapes and (strict) dtypes; an
// optimizer's groups, every hyper-parameter (present, known, valid: Optimizer::check_options)
// and each parameter's state (step, the buffers its step() needs and no others, each of the
// parameter's shape and, strict, dtype: Optimizer::check_state_dict); a scheduler's epoch and
// base lrs (the lr each group then gets must be >= 0); plain values of the kind asked for;
// the precision state (finite numbers; a gradient scaler's five keys). Only when all of it
// passes is anything written, through steps that cannot fail on validated data. So a refused
// load leaves modules, optimizers, schedulers, plain values and the precision state as they
// were. Every refusal is a loom::ValueError (RuntimeError when the file cannot be read) naming
// the file and the entry, tensor or metadata field at fault.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <variant>

#include "nn/module.h"
#include "optim/lr_scheduler.h"
#include "optim/optimizer.h"

namespace loom {

using CheckpointValue = std::variant<std::shared_ptr<nn::Module>, std::shared_ptr<optim::Optimizer>,
                                     std::shared_ptr<optim::LRScheduler>, Tensor, double, int64_t,
                                     std::string>;
using CheckpointState = std::map<std::string, CheckpointValue>;

// The kind a state value asks a checkpoint for ("module", "optimizer", "scheduler", "tensor",
// "double", "int", "string"), as both loaders (one file, sharded) check it against the file.
const char* checkpoint_kind(const CheckpointValue& v);

void save_checkpoint(const std::string& path, const CheckpointState& state,
                     const std::map<std::string, double>& precision_state = {});

// Loads into the modules, optimizers and schedulers of `state` and overwrites its plain
// values (see "Loads validate first" above). strict: a key of `state` missing from the file,
// a module key mismatch, a module or optimizer tensor of another dtype is an error; without
// strict, missing keys are skipped and tensors converted. Returns the file's entries that
// `state` did not ask for (plain values and tensors). `precision_state`, when given, receives
// the file's precision state (left as it is when the file has none).
CheckpointState load_checkpoint(const std::string& path, CheckpointState& state, bool strict = true,
                                std::map<std::string, double>* precision_state = nullptr);

}  // namespace loom
