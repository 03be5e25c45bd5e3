// Checkpoints: Fabric::save/load of a name -> value map into one safetensors file.
//
// Layout: tensors are entries named "<key>.<param>" (modules), "<key>.state.<i>.<buffer>"
// (optimizer state of parameter i) or "<key>" (a plain tensor); everything else -- optimizer
// groups and steps, scheduler state, plain numbers and strings, the precision plugin's
// scaler -- is JSON in the header's metadata under "loom". Python tools read the tensors with
// any safetensors reader. Writes are atomic (temp file, fsync, rename): a failed save never
// replaces a good file. Loads validate the whole file and every module's keys and shapes
// before changing anything.
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

void save_checkpoint(const std::string& path, const CheckpointState& state,
                     const std::map<std::string, double>& precision_state = {});

// Loads into the modules, optimizers and schedulers of `state` and overwrites its plain
// values. strict: a key of `state` missing from the file, or a module key mismatch, is an
// error. Returns the file's entries that `state` did not ask for (plain values and tensors).
CheckpointState load_checkpoint(const std::string& path, CheckpointState& state, bool strict = true,
                                std::map<std::string, double>* precision_state = nullptr);

}  // namespace loom
