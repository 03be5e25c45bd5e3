// The connector: turns FabricOptions into an accelerator, a strategy and a precision plugin,
// resolving "auto" and aliases and refusing invalid or conflicting choices with a ValueError
// that lists the valid ones. It runs in Fabric's constructor, before any process starts.
#pragma once

#include <memory>

#include "fabric/fabric.h"

namespace loom {

struct ConnectorResult {
  std::shared_ptr<Accelerator> accelerator;
  std::shared_ptr<Strategy> strategy;
  std::shared_ptr<Precision> precision;
  std::shared_ptr<dist::ClusterEnvironment> environment;  // null: detected at launch
  std::vector<int> devices;
};

ConnectorResult connect(const FabricOptions& options);

// Strategy by name for `devices` on `accelerator` ("ddp", "dp", ...).
std::shared_ptr<Strategy> make_strategy(const std::string& name, int num_devices);

}  // namespace loom
