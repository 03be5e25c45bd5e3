// FSDP ("fsdp"): fully sharded data parallel. Every rank holds 1/W of each parameter, of its
// gradient and of the optimizer's state; a unit's full parameters exist only around its
// forward and its backward (docs/design.md "Strategies"; the vocabulary is in
// fabric/fsdp_unit.h, Note [FSDP glossary]).
//
// One training step, per unit (the root last in forward, first in backward):
//   forward   pre-hook: wait for the unit's all-gather (started by the previous unit's
//             pre-hook as a prefetch, or now), start the next unit's; run the unit; post-hook:
//             free the full parameters (reshard_after_forward) and hook the output's gradient
//   backward  output-gradient hook: gather again, prefetch the unit that ran before it;
//             post-accumulate-grad hooks count the unit's gradients, and the last one
//             reduce-scatters them (averaged) into the shard's gradient and frees the unit
//   step      the optimizer, built from the set-up module's parameters() (the shards),
//             updates 1/W of the model; the next forward gathers the new values
// Units run their collectives in the same order on every rank because the model's forward
// and backward are the same everywhere; a model whose ranks take different branches needs
// the unused units' parameters to take part anyway (they are reduced with zero gradients at
// the end of backward, in unit order).
//
// Meta init (Note [Shard-only init]): under init_module() the parameters are created on meta.
// setup_module() replays the model's initialisation in construction order (children before
// parents, siblings in registration order: each module's reset_parameters()), with every rank
// drawing from rank 0's random generator. Each nn::init call gets a full, temporary copy of
// one parameter; as soon as it returns, the slice this rank owns is copied into its shard and
// the copy is freed. So a rank never holds more than its shards plus one parameter, and the
// values equal those of the model one process builds from the same seed. Initialisation
// written outside nn::init is captured once the module's reset_parameters() returns.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fabric/ddp.h"
#include "fabric/fsdp_unit.h"
#include "fabric/wrapper_module.h"

namespace loom {

struct FSDPOptions {
  // Auto-wrap policy: modules whose name() is listed become units ("Block"), and so does any
  // module holding at least min_num_params parameters outside the units below it (0: off).
  // The root unit holds what is left.
  std::vector<std::string> wrap_module_types{};
  int64_t min_num_params = 0;
  // Free a unit's full parameters after its forward (gather again for backward). false keeps
  // them from forward to the end of backward: less communication, more memory.
  bool reshard_after_forward = true;
  // Start the next unit's all-gather while the current unit computes.
  bool prefetch = true;
  // The dtype units are gathered in (default: the parameters' own) and the dtype gradients
  // are reduce-scattered in (default: the gathered dtype).
  std::optional<DType> param_dtype{};
  std::optional<DType> reduce_dtype{};
  // Launch, timeout and collectives' debug checks, as for ddp.
  DDPOptions ddp{};
  // What Fabric::save writes (docs/design.md "Sharded checkpoints"): "full", one file of the
  // whole model gathered unit by unit on rank 0 (the default: it loads anywhere, with any
  // loom reader); or "sharded", a directory in which each rank writes only its shards of the
  // parameters and of the optimizer state, plus an index (fabric/sharded_checkpoint.h), which
  // loads at any world size. Loads take either, by what the path is.
  std::string state_dict_type = "full";
};

// The module FSDP's forward runs: the user's module, its units and their hooks. parameters()
// are the shards (named "<unit>.flat_param", the root's "flat_param"); state_dict() gathers
// the full parameters unit by unit under the user's names, and load_state_dict() takes each
// rank's slice of full tensors, so a checkpoint of the full state loads at any world size.
class FullyShardedModule : public WrapperModule {
 public:
  FullyShardedModule(std::shared_ptr<nn::Module> module, std::vector<std::unique_ptr<fsdp::FlatUnit>> units,
                     std::vector<nn::Module*> unit_modules, std::shared_ptr<dist::ProcessGroup> group,
                     const FSDPOptions& options);
  ~FullyShardedModule() override;

  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "FullyShardedDataParallel"; }
  void walk_parameters(ParameterWalk& walk, bool recurse) const override;
  nn::StateDict state_dict() const override;
  nn::LoadStateDictResult load_state_dict(const nn::StateDict& state, bool strict = true) override;

  // The end of a backward: reduces what the hooks did not, frees every unit.
  void finalize_backward();
  void set_sync(bool sync) { sync_ = sync; }
  bool sync() const { return sync_; }
  bool pending_backward() const { return pending_backward_; }

  const std::vector<std::unique_ptr<fsdp::FlatUnit>>& units() const { return units_; }
  // The largest unit's padded numel: what one gather adds to a rank's memory.
  int64_t largest_unit_numel() const;

 private:
  void before_unit_forward(size_t u);
  void after_unit_forward(size_t u, const Tensor& output);
  void before_unit_backward(size_t u);
  void on_parameter_gradient(size_t u);
  void prefetch(size_t u);

  std::vector<std::unique_ptr<fsdp::FlatUnit>> units_;  // [0] is the root unit
  std::vector<nn::Module*> unit_modules_;               // parallel to units_ ([0]: the root)
  std::vector<std::pair<nn::Module*, int>> hooks_;      // forward hooks to remove
  std::vector<std::pair<Tensor, int>> grad_hooks_;      // post-accumulate-grad hooks
  std::shared_ptr<dist::ProcessGroup> group_;
  FSDPOptions options_;
  bool sync_ = true;
  bool pending_backward_ = false;
  std::vector<size_t> forward_order_;  // units in the order their forward ran (first step)
  bool order_recorded_ = false;
  std::vector<size_t> position_;        // unit -> index in forward_order_
  std::vector<int> grads_ready_;        // per unit, this backward
  std::vector<int> grads_needed_;       // per unit: its parameters that require grad
  std::vector<bool> reduced_;           // per unit, this backward
  std::deque<size_t> reducing_;         // units whose reduce-scatter is in flight, oldest first
};

class FSDPStrategy : public DDPStrategy {
 public:
  explicit FSDPStrategy(FSDPOptions options = {});
  std::string name() const override { return "fsdp"; }

  // Parameters go to meta unless empty_init is false: setup_module() initialises shards.
  ScopeStack module_init_context(std::optional<bool> empty_init) override;
  void module_to_device(nn::Module&) override {}  // setup_module() lays the shards out
  std::shared_ptr<nn::Module> setup_module(std::shared_ptr<nn::Module> module) override;
  bool optimizer_needs_setup_module_first() const override { return true; }
  void backward(const Tensor& loss) override;
  // Gradient accumulation: backwards inside skip the reduce-scatter and keep every unit's
  // unsharded gradients (the whole model's gradient size, in the gathered dtype, on every
  // rank) until the next synchronised backward reduces them: memory for fewer collectives.
  ScopeStack no_backward_sync(nn::Module& module) override;
  double reduce_norm_part(double part, bool inf_norm) override;
  void save_checkpoint(const std::string& path, const CheckpointState& state) override;
  // A directory is a sharded checkpoint (each rank reads the ranges of its shards), a file a
  // full one.
  CheckpointState load_checkpoint(const std::string& path, CheckpointState& state,
                                  bool strict) override;

  const FSDPOptions& fsdp_options() const { return options_; }

 private:
  FSDPOptions options_;
  std::vector<std::weak_ptr<FullyShardedModule>> wrapped_;
};

namespace fsdp {
// Groups the parameters of `root` into units by the policy; unit 0 is the root unit. Fills
// `modules` with each unit's module. Exposed for tests and the memory estimator.
std::vector<std::vector<std::pair<std::string, Tensor>>> plan_units(
    nn::Module& root, const FSDPOptions& options, std::vector<nn::Module*>& modules,
    std::vector<std::string>& names);
// Fills every unit's shard: from the modules' values (rank 0's, broadcast unit by unit) or,
// for meta parameters, by the shard-only initialisation of Note [Shard-only init].
void materialize_shards(nn::Module& root, std::vector<std::unique_ptr<FlatUnit>>& units,
                        dist::ProcessGroup& group);
}  // namespace fsdp

}  // namespace loom
