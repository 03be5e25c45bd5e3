// DDP: one process per device, each holding a full replica; gradients are averaged across
// processes during backward (fabric/reducer.h), so every replica takes the same step.
//
// Launch ("ddp"): unless a launcher already started the ranks (loomrun, SLURM, mpirun: the
// cluster environment says so), rank 0 is this process and it re-executes the program once
// per other local rank with the rank variables set. "ddp_spawn" forks instead and runs
// launch(fn) in each child; a child's failure is reported by the parent with its message.
// Set-up broadcasts rank 0's parameters and buffers, so ranks start identical whatever their
// seeds.
#pragma once

#include <memory>

#include "dist/cluster_environment.h"
#include "dist/process_group.h"
#include "dist/process_launcher.h"
#include "fabric/reducer.h"
#include "fabric/strategy.h"
#include "fabric/wrapper_module.h"

namespace loom {

struct DDPOptions {
  double bucket_cap_mb = 25.0;
  bool find_unused_parameters = false;
  // After a synchronised backward each .grad is a view into its all-reduce bucket (no copy
  // back); see fabric/reducer.h. false: gradients keep their own storage.
  bool gradient_as_bucket_view = true;
  bool spawn = false;  // ddp_spawn: fork + launch(fn) instead of re-executing the program
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};  // every collective
  bool debug_collectives = false;  // also on with LOOM_DEBUG_COLLECTIVES=1
};

// The module DDP's forward runs: the user's module plus its Reducer. Names are the inner
// module's, without prefix.
class DistributedDataParallel : public WrapperModule {
 public:
  DistributedDataParallel(std::shared_ptr<nn::Module> module, std::shared_ptr<Reducer> reducer);
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "DistributedDataParallel"; }
  const std::shared_ptr<nn::Module>& module() const { return inner_; }
  Reducer& reducer() { return *reducer_; }
  // Set by forward, cleared by the strategy's backward: which reducers to finalize.
  bool pending_backward = false;

 private:
  std::shared_ptr<Reducer> reducer_;
};

class DDPStrategy : public Strategy {
 public:
  explicit DDPStrategy(DDPOptions options = {});
  ~DDPStrategy() override;
  std::string name() const override { return options_.spawn ? "ddp_spawn" : "ddp"; }

  void set_cluster_environment(std::shared_ptr<dist::ClusterEnvironment> env) { env_ = std::move(env); }
  bool works_without_launch() const override { return false; }
  void launch(const std::function<void()>& fn) override;
  bool launch_needs_function() const override { return options_.spawn; }
  void setup_environment() override;
  int world_size() const override { return world_size_; }
  int global_rank() const override { return global_rank_; }
  int local_rank() const override { return local_rank_; }
  int node_rank() const override { return node_rank_; }

  std::shared_ptr<nn::Module> setup_module(std::shared_ptr<nn::Module> module) override;
  void backward(const Tensor& loss) override;
  ScopeStack no_backward_sync(nn::Module& module) override;

  Tensor all_reduce(const Tensor& t, ReduceOp op) override;
  Tensor all_gather(const Tensor& t) override;
  Tensor broadcast(const Tensor& t, int src) override;
  void barrier(const std::string& name = "") override;
  // Rank 0 writes; every rank returns once the file is complete, or throws if rank 0 failed.
  void save_checkpoint(const std::string& path, const CheckpointState& state) override;

  const std::shared_ptr<dist::ProcessGroup>& process_group() const { return group_; }
  const DDPOptions& options() const { return options_; }

 private:
  void launch_processes(const std::function<void()>& fn);
  void spawn_processes(const std::function<void()>& fn);
  void broadcast_module(nn::Module& module);

  DDPOptions options_;
  std::shared_ptr<dist::ClusterEnvironment> env_;
  std::shared_ptr<dist::ProcessGroup> group_;
  std::unique_ptr<dist::ProcessLauncher> launcher_;  // rank 0 of a "ddp" launch
  std::vector<std::weak_ptr<DistributedDataParallel>> wrapped_;
  int world_size_ = 1, global_rank_ = 0, local_rank_ = 0, node_rank_ = 0;
  std::string master_addr_ = "127.0.0.1";
  int master_port_ = 0;
};

}  // namespace loom
