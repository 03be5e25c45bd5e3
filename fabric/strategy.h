// Strategies: how a model, its optimizers and its data are spread over devices and processes.
//
// Fabric calls these in a fixed order (docs/design.md "Fabric"): launch -> setup_environment ->
// module_init_context -> setup_module / setup_optimizer -> backward / optimizer_step, with
// collectives and checkpoint IO in between. The base class is the single-device behaviour;
// DDP, DP and the sharding strategies override the parts they change.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "dist/process_group.h"
#include "fabric/accelerator.h"
#include "fabric/checkpoint.h"
#include "fabric/precision.h"
#include "fabric/scope.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace loom {

// The collectives' reduction, shared with the process groups (one enum for both layers).
using dist::ReduceOp;

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;

  // ---- configuration (set by Fabric's connector) ----
  void set_accelerator(std::shared_ptr<Accelerator> a) { accelerator_ = std::move(a); }
  void set_precision(std::shared_ptr<Precision> p) { precision_ = std::move(p); }
  void set_devices(std::vector<int> devices) { devices_ = std::move(devices); }
  void set_num_nodes(int n) { num_nodes_ = n; }
  Accelerator& accelerator() const { return *accelerator_; }
  Precision& precision() const { return *precision_; }
  const std::vector<int>& devices() const { return devices_; }
  int num_nodes() const { return num_nodes_; }

  // ---- processes ----
  // Whether init_module()/setup() may run before launch() (single device and dp: yes).
  virtual bool works_without_launch() const { return true; }
  // Starts the other processes where needed and calls fn in each (this one included).
  virtual void launch(const std::function<void()>& fn) { fn(); }
  // Whether the other processes can only run a function given to launch (ddp_spawn forks
  // them into fn); then Fabric::launch() without one is refused.
  virtual bool launch_needs_function() const { return false; }
  // Process group up, device chosen; runs in every process before user code.
  virtual void setup_environment() {}
  virtual Device root_device() const;
  virtual int world_size() const { return 1; }
  virtual int global_rank() const { return 0; }
  virtual int local_rank() const { return 0; }
  virtual int node_rank() const { return 0; }
  bool is_global_zero() const { return global_rank() == 0; }

  // ---- model ----
  // Guards active inside Fabric::init_module(): device, init mode, precision dtype.
  virtual ScopeStack module_init_context(std::optional<bool> empty_init);
  // Moves the module's parameters to root_device() (identity kept, Note [Parameter identity]).
  virtual void module_to_device(nn::Module& module);
  // Wraps the module for this strategy (DDP, FSDP ...); the default returns it unchanged.
  // A strategy that replaces parameter handles one for one under the same names has
  // optimizers remapped by Fabric afterwards (as after a device move).
  virtual std::shared_ptr<nn::Module> setup_module(std::shared_ptr<nn::Module> module) {
    return module;
  }
  // Whether setup_module() turns the module's parameters into other tensors (flat shards),
  // so that an optimizer must be built from the set-up module's parameters, after
  // setup_module(): setup(module, optimizer) is then refused.
  virtual bool optimizer_needs_setup_module_first() const { return false; }
  // Returns the optimizer Fabric wraps and steps: `opt` itself (the default), or a
  // replacement that holds it (ZeRO partitions the optimizer's state this way). The
  // replacement must take `opt`'s param groups and hyper-parameters as given.
  virtual std::shared_ptr<optim::Optimizer> setup_optimizer(std::shared_ptr<optim::Optimizer> opt) {
    return opt;
  }

  // ---- training step ----
  virtual void backward(const Tensor& loss);
  virtual bool optimizer_step(optim::Optimizer& opt) { return precision_->optimizer_step(opt); }
  // Guard inside which backward() skips gradient synchronisation (no-op on one process).
  virtual ScopeStack no_backward_sync(nn::Module&) { return {}; }

  // ---- collectives (identity on one process) ----
  virtual Tensor all_reduce(const Tensor& t, ReduceOp op);
  virtual Tensor all_gather(const Tensor& t);  // stacked along a new dim 0
  virtual Tensor broadcast(const Tensor& t, int src);
  virtual void barrier(const std::string& name = "") {}
  // The whole model's part of a gradient norm from this process's part (sum of |g|^p, or
  // max |g| for the inf-norm): the identity where every process holds every gradient
  // (single device, ddp); a sum or max over the ranks where each holds a shard.
  virtual double reduce_norm_part(double part, bool inf_norm) { return part; }

  // ---- checkpoints (fabric/checkpoint.h) ----
  // The default writes the file in this process: right for one process. Data-parallel
  // strategies write on rank 0 and wait; sharding strategies gather or write shards.
  virtual void save_checkpoint(const std::string& path, const CheckpointState& state);
  // Every process loads the file into its own objects (a directory: the whole of a sharded
  // checkpoint, fabric/sharded_checkpoint.h).
  virtual CheckpointState load_checkpoint(const std::string& path, CheckpointState& state,
                                          bool strict);

 protected:
  std::shared_ptr<Accelerator> accelerator_;
  std::shared_ptr<Precision> precision_;
  std::vector<int> devices_{0};
  int num_nodes_ = 1;
};

class SingleDeviceStrategy : public Strategy {
 public:
  std::string name() const override { return "single_device"; }
};

}  // namespace loom
