// The "deepspeed" strategy: ZeRO stages 1 and 2 on loom's process groups (docs/design.md
// "Strategies"; the partition, the gradient reduce-scatter and the optimizer are in
// fabric/zero.h, Note [ZeRO partition]).
//
//   stage 1   optimizer state partitioned: gradients all-reduced (averaged) during backward as
//             under ddp, each rank steps its 1/W of the parameters, the updated shards are
//             all-gathered so every rank holds the same parameters
//   stage 2   gradients partitioned too: reduce-scattered (averaged) bucket by bucket during
//             backward, each rank keeps the gradient of its shard only
//   stage 3   parameters partitioned too: the module is set up as fsdp sets it up (fabric/fsdp.h:
//             units by stage3_wrap_module_types / stage3_min_num_params, flat shards gathered
//             around each unit's forward and backward, gradients reduce-scattered into the
//             shards, meta init under init_module()); as under fsdp, build the optimizer from
//             the set-up module's parameters() after setup_module()
//
// It derives from FSDPStrategy (itself a DDPStrategy) for launch (re-executing the program per
// rank, or loomrun / SLURM / mpirun), the process group, the collectives and stage 3; stages 1
// and 2 override what they change and go to DDPStrategy's and Strategy's behaviour for the
// rest (set-up broadcasts rank 0's parameters and buffers as ddp does, modules are built and
// moved as on one device). Fabric steps the optimizer that setup_optimizer() returns, a
// ZeroOptimizer around the user's (stage 3: the user's own, over the shards).
//
// Zeroing gradients: call zero_grad() on the optimizer setup() returned (or on the module).
// Under stages 1 and 2 the user's own optimizer object holds this rank's pieces, so its own
// zero_grad() clears only the pieces' views, not the parameters' gradients, and the next
// backward would add to stale ones.
//
// Checkpoints (Fabric::save / load): every rank takes part in gathering each ZeRO optimizer's
// full state (ZeroOptimizer::full_state_dict), and rank 0 writes one file in the layout one
// process writes. Every rank reads that file and keeps its own ranges, so a checkpoint loads
// at the world size it was saved at, at any other, and in a single process (and a
// single-process checkpoint loads here). The price: rank 0 holds the whole optimizer state
// while it writes, and each rank reads the whole of it while it loads. Stage 3 saves what fsdp
// saves: the gathered model and plain values; its optimizer state is not yet saved (a
// ValueError). state_dict_type = "sharded" avoids all three, at every stage: each rank writes
// and reads only its partition, optimizer state included (fabric/sharded_checkpoint.h).
//
// Not supported: 16-mixed (its gradient scaler checks for inf/nan per optimizer over the
// gradients it sees, which under ZeRO are one rank's partition, so the ranks could disagree
// on skipping a step): launch() refuses it with a ValueError; bf16-mixed and the true
// precisions work. offload_optimizer is accepted and does nothing on a CPU run, where the
// optimizer state already is in host memory (rank 0 says so in one line at set-up).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "fabric/ddp.h"
#include "fabric/fsdp.h"
#include "fabric/reducer.h"
#include "fabric/sharded_checkpoint.h"
#include "fabric/wrapper_module.h"
#include "fabric/zero.h"

namespace loom {

struct DeepSpeedOptions {
  int stage = 2;  // 1, 2 or 3
  // Keep the optimizer state in host memory. A CPU run holds it there anyway: accepted, does
  // nothing, and rank 0 says so at set-up.
  bool offload_optimizer = false;
  // Partition buckets: stage 2 reduce-scatters gradients bucket by bucket, stage 1 all-reduces
  // them in buckets of this size (DDP's reducer); both partition each bucket evenly.
  double reduce_bucket_mb = 25.0;
  // Gathered parameters held at once after a step (at least one bucket).
  double allgather_bucket_mb = 25.0;
  // Parameters without a gradient in a backward count as zero gradients; without it the
  // backward fails naming them (as ddp does).
  bool find_unused_parameters = false;
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};  // every collective
  bool debug_collectives = false;  // also on with LOOM_DEBUG_COLLECTIVES=1
  // Stage 3's units, fsdp's auto-wrap policy (FSDPOptions): modules whose name() is listed,
  // and any module holding at least this many parameters outside the units below it (0: off);
  // the root unit holds the rest (by default, the whole model is one unit).
  std::vector<std::string> stage3_wrap_module_types{};
  int64_t stage3_min_num_params = 0;
  // What Fabric::save writes, as FSDPOptions::state_dict_type: "full" (one file, the layout
  // one process writes; the default) or "sharded" (a directory with each rank's partition of
  // the parameters and of the optimizer state, plus an index; fabric/sharded_checkpoint.h),
  // any stage. Loads take either, by what the path is, at any world size.
  std::string state_dict_type = "full";
};

// The module the strategy's forward runs: the user's module, its partition and (stage 1) its
// gradient reducer. Names, parameters and state are the inner module's, without prefix.
class ZeroDataParallel : public WrapperModule {
 public:
  ZeroDataParallel(std::shared_ptr<nn::Module> module, std::shared_ptr<ZeroPartition> partition,
                   std::shared_ptr<Reducer> reducer);
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "ZeroDataParallel"; }
  const std::shared_ptr<nn::Module>& module() const { return inner_; }
  ZeroPartition& partition() { return *partition_; }
  const std::shared_ptr<ZeroPartition>& partition_ptr() const { return partition_; }
  Reducer* reducer() { return reducer_.get(); }  // stage 1 only
  // Set by forward, cleared by the strategy's backward: which modules to finalize.
  bool pending_backward = false;

 private:
  std::shared_ptr<ZeroPartition> partition_;
  std::shared_ptr<Reducer> reducer_;
};

class DeepSpeedStrategy : public FSDPStrategy {
 public:
  // ValueError for a stage other than 1, 2 or 3 and for bucket sizes that are not positive.
  explicit DeepSpeedStrategy(DeepSpeedOptions options = {});
  std::string name() const override { return "deepspeed"; }

  void launch(const std::function<void()>& fn) override;
  void setup_environment() override;
  ScopeStack module_init_context(std::optional<bool> empty_init) override;
  void module_to_device(nn::Module& module) override;
  std::shared_ptr<nn::Module> setup_module(std::shared_ptr<nn::Module> module) override;
  bool optimizer_needs_setup_module_first() const override { return ds_.stage == 3; }
  std::shared_ptr<optim::Optimizer> setup_optimizer(std::shared_ptr<optim::Optimizer> opt) override;
  void backward(const Tensor& loss) override;
  ScopeStack no_backward_sync(nn::Module& module) override;
  // Stage 1: every rank holds every gradient (the identity). Stages 2 and 3: the sum (max for
  // the inf-norm) of the ranks' parts.
  double reduce_norm_part(double part, bool inf_norm) override;
  void save_checkpoint(const std::string& path, const CheckpointState& state) override;
  CheckpointState load_checkpoint(const std::string& path, CheckpointState& state,
                                  bool strict) override;

  const DeepSpeedOptions& deepspeed_options() const { return ds_; }
  int stage() const { return ds_.stage; }

 private:
  void broadcast_from_rank0(nn::Module& module);
  // The ZeroOptimizer behind `opt`: opt itself, a FabricOptimizer around it, or the user's
  // optimizer it wraps; null for any other.
  std::shared_ptr<ZeroOptimizer> zero_optimizer_of(
      const std::shared_ptr<optim::Optimizer>& opt) const;
  // Sharded checkpoints' group, precision state, and the ZeroOptimizer of each optimizer.
  ShardedCheckpointContext sharded_context() const;

  DeepSpeedOptions ds_;
  std::vector<std::weak_ptr<ZeroDataParallel>> modules_;
  std::vector<std::weak_ptr<ZeroOptimizer>> optimizers_;
};

// The strategy for a name the connector takes: "deepspeed" (stage 2), "deepspeed_stage_1",
// "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
// "deepspeed_stage_3_offload"; any other "deepspeed..." name is a ValueError listing them.
std::shared_ptr<DeepSpeedStrategy> make_deepspeed_strategy(const std::string& name);

}  // namespace loom
