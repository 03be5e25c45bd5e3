#include "fabric/strategy.h"

#include "fabric/sharded_checkpoint.h"
#include "nn/init.h"
#include "tensor/defaults.h"
#include "tensor/native.h"

namespace loom {

Device Strategy::root_device() const {
  return accelerator_->device(devices_.empty() ? 0 : devices_[local_rank() % devices_.size()]);
}

ScopeStack Strategy::module_init_context(std::optional<bool> empty_init) {
  ScopeStack s;
  s.push<DefaultDeviceGuard>(root_device());
  // Single device: nullopt means "initialise normally" (there is nothing to shard).
  if (empty_init.value_or(false)) s.push<nn::init::InitTableGuard>(nn::init::empty_init_table());
  s.push(precision_->module_init_context());
  return s;
}

void Strategy::module_to_device(nn::Module& module) { module.to(root_device()); }

void Strategy::backward(const Tensor& loss) { precision_->pre_backward(loss).backward(); }

void Strategy::save_checkpoint(const std::string& path, const CheckpointState& state) {
  loom::save_checkpoint(path, state, precision_->state_dict());
}

CheckpointState Strategy::load_checkpoint(const std::string& path, CheckpointState& state,
                                          bool strict) {
  std::map<std::string, double> precision_state;
  // A directory is a sharded checkpoint (fsdp / deepspeed, state_dict_type "sharded"): this
  // process reads all of it into its plain modules and optimizers.
  CheckpointState rest =
      is_sharded_checkpoint_path(path)
          ? load_sharded_checkpoint(path, state, strict, {}, &precision_state)
          : loom::load_checkpoint(path, state, strict, &precision_state);
  precision_->load_state_dict(precision_state);
  return rest;
}

Tensor Strategy::all_reduce(const Tensor& t, ReduceOp) { return t; }
Tensor Strategy::all_gather(const Tensor& t) { return native::unsqueeze(t, 0); }
Tensor Strategy::broadcast(const Tensor& t, int) { return t; }

}  // namespace loom
