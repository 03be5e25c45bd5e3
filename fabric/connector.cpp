#include "fabric/connector.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "fabric/ddp.h"
#include "fabric/deepspeed.h"
#include "fabric/dp.h"
#include "fabric/elastic_launch.h"
#include "fabric/fsdp.h"
#include "core/cuda_status.h"

namespace loom {
namespace {

const char* kAccelerators = "cpu, cuda, gpu, mps, tpu, auto";
// The strategies Fabric runs (deepspeed's stage names: make_deepspeed_strategy).
const char* kStrategies =
    "auto, single_device, dp, ddp, ddp_spawn, fsdp, deepspeed";

std::shared_ptr<Accelerator> make_accelerator(std::string name) {
  if (name == "gpu") name = "cuda";
  if (name == "auto") name = cuda_device_count() > 0 ? "cuda" : "cpu";
  if (name == "cpu") return std::make_shared<CPUAccelerator>();
  if (name == "cuda") {
    auto a = std::make_shared<CUDAAccelerator>();
    if (!a->is_available())
      throw ValueError(std::string("accelerator 'cuda' was requested but no CUDA device is "
                                   "available: ") +
#ifdef LOOM_WITH_CUDA
                       "CUDA sees none; use accelerator='cpu' or 'auto'"
#else
                       kNoCudaBackend
#endif
      );
    return a;
  }
  if (name == "mps" || name == "tpu")
    throw ValueError("accelerator '" + name + "' is not available in this build of loom (it "
                     "supports cpu and cuda); valid: " + kAccelerators);
  throw ValueError("unknown accelerator '" + name + "'; valid: " + kAccelerators);
}

std::vector<int> parse_devices(const DevicesArg& arg, const Accelerator& acc) {
  int available = acc.device_count();
  auto all = [&] {
    std::vector<int> d;
    for (int i = 0; i < std::max(available, 1); ++i) d.push_back(i);
    return d;
  };
  auto count = [&](int n) {
    if (n == -1) return acc.name() == "cpu" ? std::vector<int>{0} : all();
    if (n <= 0)
      throw ValueError("devices=" + std::to_string(n) +
                       " is invalid; pass a positive count, a list of indices, -1 or \"auto\"");
    std::vector<int> d;
    for (int i = 0; i < n; ++i) d.push_back(acc.name() == "cpu" ? 0 : i);
    return d;
  };
  if (auto* n = std::get_if<int>(&arg.value)) return count(*n);
  if (auto* list = std::get_if<std::vector<int>>(&arg.value)) {
    if (list->empty()) throw ValueError("devices=[] is invalid; list at least one device index");
    return *list;
  }
  const std::string& s = std::get<std::string>(arg.value);
  if (s == "auto") return acc.name() == "cpu" ? std::vector<int>{0} : all();
  // std::stoi throws std::invalid_argument / std::out_of_range (both std::logic_error) on
  // text that is no number; that must surface as the ValueError below, in lists too.
  try {
    if (s.find(',') != std::string::npos) {
      std::vector<int> d;
      std::stringstream ss(s);
      for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty()) d.push_back(std::stoi(item));
      return d;
    }
    return count(std::stoi(s));
  } catch (const std::logic_error&) {
    throw ValueError("devices=\"" + s + "\" is invalid; use a count, \"auto\", -1 or \"0,1\"");
  }
}

}  // namespace

ConnectorResult connect(const FabricOptions& o) {
  ConnectorResult r;
  // Plugins first: an object given there overrides the corresponding option.
  for (const Plugin& p : o.plugins) {
    if (p.precision) {
      if (r.precision)
        throw ValueError("plugins: two precision plugins were given; pass exactly one");
      r.precision = p.precision;
    }
    if (p.strategy) {
      if (r.strategy) throw ValueError("plugins: two strategies were given; pass exactly one");
      r.strategy = p.strategy;
    }
    if (p.accelerator) {
      if (r.accelerator) throw ValueError("plugins: two accelerators were given; pass exactly one");
      r.accelerator = p.accelerator;
    }
    if (p.environment) r.environment = p.environment;
  }
  if (o.strategy.object) {
    if (r.strategy)
      throw ValueError("a strategy object was passed both as `strategy` and in `plugins`; pass it once");
    r.strategy = o.strategy.object;
  }
  if (o.num_nodes < 1)
    throw ValueError("num_nodes=" + std::to_string(o.num_nodes) + " is invalid; it must be >= 1");
  if (!r.accelerator) r.accelerator = make_accelerator(o.accelerator);
  r.devices = parse_devices(o.devices, *r.accelerator);
  if (r.accelerator->name() == "cuda")
    for (int d : r.devices)
      if (d < 0 || d >= r.accelerator->device_count())
        throw ValueError("devices: index " + std::to_string(d) + " is out of range; " +
                         std::to_string(r.accelerator->device_count()) + " CUDA device(s) visible");
  if (!r.precision) r.precision = make_precision(o.precision);
  if (!r.strategy) {
    std::string name = o.strategy.name;
    if (name == "auto") name = r.devices.size() > 1 || o.num_nodes > 1 ? "ddp" : "single_device";
    r.strategy = make_strategy(name, int(r.devices.size()));
  }
  r.strategy->set_accelerator(r.accelerator);
  r.strategy->set_precision(r.precision);
  r.strategy->set_devices(r.devices);
  r.strategy->set_num_nodes(o.num_nodes);
  if (auto* ddp = dynamic_cast<DDPStrategy*>(r.strategy.get()); ddp && r.environment)
    ddp->set_cluster_environment(r.environment);
  check_max_restarts(o.max_restarts, *r.strategy);
  return r;
}

std::shared_ptr<Strategy> make_strategy(const std::string& name, int num_devices) {
  if (name == "single_device") {
    if (num_devices > 1)
      throw ValueError("strategy 'single_device' runs on one device but devices=" +
                       std::to_string(num_devices) + "; use strategy='ddp' or devices=1");
    return std::make_shared<SingleDeviceStrategy>();
  }
  if (name == "ddp" || name == "ddp_spawn")
    return std::make_shared<DDPStrategy>(DDPOptions{.spawn = name == "ddp_spawn"});
  if (name == "dp") return std::make_shared<DataParallelStrategy>();
  if (name == "fsdp") return std::make_shared<FSDPStrategy>();
  // deepspeed (stage 2), deepspeed_stage_1, ...: fabric/deepspeed.h lists and checks them.
  if (name == "deepspeed" || name.starts_with("deepspeed_")) return make_deepspeed_strategy(name);
  throw ValueError("unknown strategy '" + name + "'; valid: " + kStrategies);
}

}  // namespace loom
