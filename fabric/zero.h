// ZeRO stages 1 and 2 (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training
// Trillion Parameter Models"): the partition of a module's trainable parameters over the ranks
// of a process group, the stage-2 gradient reduce-scatter, and the optimizer that steps only
// this rank's partition. The strategy that uses them is fabric/deepspeed.h; the design is in
// docs/design.md "Strategies".
//
// Note [ZeRO partition]: the trainable parameters are laid out, in reverse registration order
// (the order backward produces their gradients) and one dtype per bucket, in flat buckets of
// about reduce_bucket_mb, as DDP's reducer lays out its gradient buckets. Each bucket is padded
// with zeros to a multiple of the world size W and split into W equal contiguous shards: rank r
// owns elements [r s, (r + 1) s) of every bucket (s = padded / W). A parameter may straddle two
// shards (each owner steps its part) or own none on some rank (a 3-element bias on 4 ranks).
// We chose this over a parameter-granular partition (whole parameters assigned to ranks,
// balanced by numel) because every rank then owns exactly ceil(n / W) elements of a bucket of n,
// whatever the parameter sizes, and a bucket's gradients are one reduce_scatter and its
// updated parameters one all_gather, with no per-owner collectives.
//
// Each rank holds its shard of every bucket as a persistent tensor (1/W of the parameters, in
// their dtype). The user's optimizer is re-pointed (Optimizer::replace_parameters) from each
// parameter to its "piece": a 1-D leaf that views this parameter's part of the shard (0
// elements where the rank owns none of it). So the optimizer keeps state for this rank's
// elements only, its param groups, hyper-parameters and state indices stay the user's, and
// any optimizer with elementwise updates (SGD, Adam, AdamW) gives the numbers it would give
// on the whole model. A step (ZeroOptimizer::step): copy the owned ranges of the parameters
// into the shards (so values written since, by a checkpoint load say, are what is stepped),
// point each piece's .grad at its range of the parameter's .grad (a view, no copy), run the
// user's optimizer, then all_gather every bucket's shards and copy the full buckets into the
// parameters, so every rank holds identical parameters again.
//
// Gradients. Stage 1: DDP's reducer all-reduces (averages) them during backward; every rank
// keeps full gradients, as under ddp. Stage 2 (this file): a parameter's
// post-accumulate-grad hook marks it ready; when every parameter of a bucket is (and every
// bucket before it has launched), its gradients are copied into a padded flat buffer, the
// parameters' .grad are released, and the buffer is reduce-scattered (avg) asynchronously while
// backward goes on; at most two buckets are in flight (the oldest is waited for, and its flat
// buffer freed, before a third starts). At the end of backward (finalize) each rank holds the
// averaged gradient of its shard of every bucket, its "partition gradient", and presents it
// as the parameters' .grad: a parameter wholly inside the shard gets a view of the partition
// gradient, one that straddles the shard boundary a full-shape tensor that is zero outside
// the owned range, and one outside the shard none. So clip_gradients sees exactly this rank's
// part of the gradient norm (the strategy sums the parts over ranks) and clipping scales what
// the step uses. Memory after backward: the partition gradients (1/W) plus the straddling
// parameters; during backward, the gradients not yet launched plus two flat buckets.
//
// Accumulation in stage 2. The presented gradients must not be averaged again: a later
// backward would add this rank's local gradient to them and the next reduce-scatter would
// divide them by W. So before every backward (before_backward) the presented gradients are
// moved aside into the partition gradient ("stashed") and the parameters' .grad cleared; the
// next synchronised backward adds its reduce-scatter result to the stash. Under
// no_backward_sync, backward keeps full local gradients of every parameter (the memory of
// ddp, not 1/W) until the synchronised backward reduces their sum.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/process_group.h"
#include "optim/optimizer.h"
#include "tensor/tensor.h"

namespace loom {

struct ZeroPartitionOptions {
  int stage = 2;                       // 1: gradients reduced elsewhere (DDP's reducer); 2: here
  int64_t bucket_bytes = 25 << 20;     // partition buckets (and reduce-scatter granularity)
  int64_t allgather_bytes = 25 << 20;  // gathered parameter bytes in flight after a step
  bool find_unused_parameters = false;
};

struct ZeroStats {
  int64_t buckets_launched_during_backward = 0;  // stage 2: reduce-scatters started from a hook
  int64_t buckets_launched_at_finalize = 0;
  int64_t all_gathers = 0;  // bucket all-gathers after steps
};

class ZeroPartition {
 public:
  // names: the parameters' dotted names (for errors), parallel to params. Parameters that do
  // not require grad are left out: they never change after set-up's broadcast.
  ZeroPartition(std::vector<Tensor> params, std::vector<std::string> names,
                std::shared_ptr<dist::ProcessGroup> group, ZeroPartitionOptions options);
  ~ZeroPartition();
  ZeroPartition(const ZeroPartition&) = delete;
  ZeroPartition& operator=(const ZeroPartition&) = delete;

  int world_size() const { return world_; }
  int rank() const { return rank_; }
  int stage() const { return options_.stage; }
  dist::ProcessGroup& group() const { return *group_; }

  // ---- layout (Note [ZeRO partition]) ----
  size_t num_params() const { return params_.size(); }
  size_t num_buckets() const { return buckets_.size(); }
  std::optional<size_t> index_of(const Tensor& param) const;
  const Tensor& param(size_t k) const { return params_[k]; }
  const std::string& name(size_t k) const { return names_[k]; }
  // This rank's part of parameter k: a 1-D leaf viewing the shard, 0 elements when none.
  const Tensor& piece(size_t k) const { return pieces_[k]; }
  // The owned range [begin, end) of parameter k's flattened elements (empty: begin == end).
  int64_t owned_begin(size_t k) const { return slot(k).lo; }
  int64_t owned_end(size_t k) const { return slot(k).hi; }
  size_t bucket_of(size_t k) const { return where_[k].first; }
  // Where parameter k starts in its bucket's flat layout, and where its owned range starts in
  // this rank's shard of that bucket.
  int64_t bucket_offset(size_t k) const { return slot(k).offset; }
  int64_t shard_offset(size_t k) const { return slot(k).shard_offset; }
  int64_t shard_numel(size_t b) const { return buckets_[b].shard; }
  // Elements of all shards this rank owns (padding included), and of all parameters.
  int64_t owned_numel() const;
  int64_t total_numel() const;

  // ---- steps (ZeroOptimizer) ----
  // Copies the owned ranges of the parameters into the shards of the buckets flagged.
  void load_shards(const std::vector<bool>& buckets);
  // Points each piece's .grad at its range of its parameter's .grad (none when undefined).
  void bind_piece_grad(size_t k);
  // All-gathers the flagged buckets' shards and writes the full values into the parameters.
  void gather_parameters(const std::vector<bool>& buckets);
  // The full (padded) bucket b from every rank's `shard` (shard_numel(b) elements): a
  // collective every rank must call in the same order.
  Tensor all_gather_bucket(size_t b, const Tensor& shard);
  // Zeroes what is stashed for parameter k (the optimizer's zero_grad: a stash must not
  // outlive the gradients it was taken from).
  void discard_stash(size_t k);

  // ---- stage 2 gradients ----
  void mark_ready(size_t k);
  // Before every backward: moves presented partition gradients aside (see the note above).
  void before_backward();
  // After a synchronised backward: waits for the reduce-scatters and presents the result.
  void finalize();
  void set_sync(bool sync) { sync_ = sync; }
  bool sync() const { return sync_; }
  const ZeroStats& stats() const { return stats_; }

 private:
  struct Slot {
    size_t param;
    int64_t offset;  // of the parameter in the bucket's flat layout
    int64_t numel;
    int64_t lo = 0, hi = 0;    // owned range of the parameter's flat elements
    int64_t shard_offset = 0;  // where element lo sits in this rank's shard
    bool owned() const { return hi > lo; }
  };
  struct Bucket {
    DType dtype;
    Device device = Device::cpu();
    std::vector<Slot> slots;
    int64_t numel = 0, padded = 0, shard = 0;
    Tensor shard_params;  // (shard,) this rank's slice of the parameters
    // stage 2
    size_t pending = 0;
    Tensor flat;               // padded gradients in flight
    Tensor reduced;            // (shard,) the reduce-scatter's output
    Tensor partition_grad;     // (shard,) the averaged gradient of the shard, presented as .grad
    bool stash_valid = false;  // partition_grad holds a stash the next finalize adds to
    bool presented = false;
    std::shared_ptr<dist::Work> work;
  };
  const Slot& slot(size_t k) const { return buckets_[where_[k].first].slots[where_[k].second]; }
  void launch(size_t b, bool from_hook);
  void launch_ready(bool from_hook);
  void wait_bucket(Bucket& bucket);
  void reset_readiness();

  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::vector<Tensor> pieces_;
  std::shared_ptr<dist::ProcessGroup> group_;
  ZeroPartitionOptions options_;
  int world_ = 1, rank_ = 0;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> where_;               // param -> (bucket, slot)
  std::vector<std::pair<const TensorImpl*, size_t>> by_impl_;  // sorted, for index_of
  std::vector<int> hook_ids_;
  std::vector<bool> ready_;
  size_t next_to_launch_ = 0;
  std::vector<size_t> in_flight_;  // launched, not yet waited for, oldest first
  bool sync_ = true;
  ZeroStats stats_;
};

// The optimizer Fabric steps under the deepspeed strategy: the user's optimizer, re-pointed at
// this rank's pieces (Note [ZeRO partition]), plus the step, zero_grad and state plumbing.
// param_groups() are the user's optimizer's groups (hyper-parameters, schedulers and the
// state indices unchanged; the tensors in them are the pieces). state_dict() is this rank's
// partition: every buffer of a parameter's state is its piece, 1-D. load_state_dict() and
// check_state_dict() accept that, or the full state of a checkpoint (each buffer of its
// parameter's shape, as one process saves it), of which they keep this rank's ranges.
class ZeroOptimizer : public optim::Optimizer {
 public:
  // Re-points `inner` at the pieces of its parameters, which must all belong to `partitions`
  // (any state it already has is cut to this rank's ranges).
  ZeroOptimizer(std::shared_ptr<optim::Optimizer> inner,
                std::vector<std::shared_ptr<ZeroPartition>> partitions);

  void step() override;
  void zero_grad(bool set_to_none = true) override;
  std::vector<optim::ParamGroup>& param_groups() override { return inner_->param_groups(); }
  const std::vector<optim::ParamGroup>& param_groups() const override {
    return std::as_const(*inner_).param_groups();
  }
  void add_param_group(optim::ParamGroup group) override;
  // A model parameter's state is its piece's (nullptr where this rank owns none of it).
  const optim::ParamState* state(const Tensor& param) const override;
  optim::OptimizerStateDict state_dict() const override { return inner_->state_dict(); }
  void load_state_dict(const optim::OptimizerStateDict& dict) override;
  void check_state_dict(const optim::OptimizerStateDict& dict,
                        bool exact_dtypes = false) const override;
  optim::StateBuffers state_buffers(const optim::HyperParams& options) const override {
    return inner_->state_buffers(options);
  }
  int64_t replace_parameters(const std::unordered_map<TensorImpl*, Tensor>& old_to_new) override;

  // The whole model's optimizer state, as one process holding every parameter would have it
  // (buffers in the parameters' shapes and dtypes): a collective every rank calls in the same
  // order. Checkpoints save this, so a file loads at any world size, or in one process.
  optim::OptimizerStateDict full_state_dict() const;
  // Bytes of this rank's state tensors.
  int64_t state_bytes() const;

  const std::shared_ptr<optim::Optimizer>& optimizer() const { return inner_; }

  // The parameter at position i of the groups (the state dict's index i): its partition and
  // its index there. Sharded checkpoints name the state by it (fabric/sharded_checkpoint.h).
  size_t num_positions() const { return bindings_.size(); }
  const ZeroPartition& partition_at(size_t i) const { return *bindings_.at(i).partition; }
  size_t index_at(size_t i) const { return bindings_.at(i).k; }

 protected:
  void check_options(const optim::HyperParams&) const override {}
  void step_group(optim::ParamGroup&) override {}

 private:
  struct Binding {
    ZeroPartition* partition;
    size_t k;      // parameter index in the partition
    size_t owner;  // index into partitions_
  };
  // A state dict's buffers cut to this rank's pieces (full-shape buffers) or taken as they
  // are (piece-shape ones); state for parameters this rank owns none of is dropped.
  optim::OptimizerStateDict to_local(const optim::OptimizerStateDict& dict) const;

  std::shared_ptr<optim::Optimizer> inner_;
  std::vector<std::shared_ptr<ZeroPartition>> partitions_;
  std::vector<Binding> bindings_;  // by position in the groups (the state dict's order)
  std::vector<std::vector<bool>> buckets_used_;  // per partition
};

}  // namespace loom
