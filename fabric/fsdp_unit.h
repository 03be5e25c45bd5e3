// FlatUnit: one FSDP unit's parameters, flattened and sharded across the ranks.
//
// Note [FSDP glossary]
//   unit        a module chosen by the auto-wrap policy (or the root, for what is left), whose
//               parameters are gathered and freed together
//   flat        the unit's parameters laid end to end, in walk order, padded with zeros to a
//               multiple of the world size W: padded = ceil(numel / W) * W elements
//   shard       this rank's 1/W of flat: elements [rank * S, (rank + 1) * S), S = padded / W,
//               in the master dtype; the only copy of the parameters that persists, and the
//               tensor the optimizer steps
//   full        one Storage of `padded` elements in the compute dtype that every parameter of
//               the unit views (its TensorImpl points into it), allocated only while gathered
//   gather      all_gather of the shards into full; reshard frees full again
//
// Memory per state (P = the unit's padded numel, m = master bytes, c = compute bytes):
//   sharded   P / W * m            (shard only; full released, parameters refuse access)
//   gathered  P / W * m + P * c    (shard + full)
// plus, while its gradients are reduced, P * r bytes of flat gradient (r = reduce bytes).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dist/process_group.h"
#include "tensor/storage.h"
#include "tensor/tensor.h"

namespace loom::fsdp {

enum class ShardState {
  sharded,    // full released: the parameters refuse data access
  gathering,  // an all-gather into full is in flight (prefetch)
  gathered,   // full holds every rank's shard: the parameters are valid views
};

const char* state_name(ShardState s);

// Elements [start, start + len) of a 1-D tensor, as a view.
Tensor flat_span(const Tensor& flat, int64_t start, int64_t len);

struct FlatParam {
  std::string name;  // dotted name in the root module ("blocks.0.attn.qkv.weight")
  Tensor param;      // the module's parameter handle; a view into the unit's full storage
  Shape shape;
  int64_t offset = 0;  // into flat, in elements
  int64_t numel = 0;
};

// Units whose reduce-scatter may be in flight at once during backward: the one just started
// and the one before it, so that a collective always overlaps the next unit's backward.
inline constexpr size_t kMaxReducesInFlight = 2;

class FlatUnit {
 public:
  // `params` in walk order, all of dtype `master`. Builds the layout; no memory yet.
  FlatUnit(std::string name, std::vector<FlatParam> params, DType master, DType compute,
           DType reduce, int rank, int world);

  const std::string& name() const { return name_; }
  std::vector<FlatParam>& params() { return params_; }
  const std::vector<FlatParam>& params() const { return params_; }
  int64_t numel() const { return numel_; }
  int64_t padded_numel() const { return padded_; }
  int64_t shard_numel() const { return padded_ / world_; }
  // Element range of flat that this rank owns.
  int64_t shard_begin() const { return int64_t(rank_) * shard_numel(); }
  ShardState state() const { return state_; }
  DType master_dtype() const { return master_; }
  DType compute_dtype() const { return compute_; }

  // The shard (1-D, master dtype, a leaf that requires grad): set once by the materialiser.
  const Tensor& shard() const { return shard_; }
  void set_shard(Tensor shard);

  // Points every parameter into the full storage (released) and forgets its old storage.
  void bind_parameters();

  // Starts the all-gather of the shards into full (no-op unless sharded), and waits for it.
  void gather_async(dist::ProcessGroup& group);
  void wait_gathered();
  void gather(dist::ProcessGroup& group) {
    gather_async(group);
    wait_gathered();
  }
  // Frees full; the parameters refuse data access until the next gather.
  void reshard();

  // Starts the reduce-scatter of the parameters' gradients (a missing one counts as zero),
  // averaged over the ranks, and drops them; finish_reduce() waits for it, frees the padded
  // flat gradient and adds the result to the shard's gradient (or sets it). The collective
  // runs while backward goes on; FullyShardedModule keeps at most kMaxReducesInFlight units'
  // flat gradients alive, so a rank never holds the whole model's gradient at once.
  void reduce_gradients_async(dist::ProcessGroup& group);
  void finish_reduce();

 private:
  Storage::Refusal make_refusal() const;

  std::string name_;
  std::vector<FlatParam> params_;
  DType master_, compute_, reduce_;
  int rank_, world_;
  int64_t numel_ = 0, padded_ = 0;
  Tensor shard_;
  std::shared_ptr<Storage> full_;
  Storage::Refusal refusal_;  // what a sharded parameter's data access throws
  Tensor full_flat_;    // (padded,) compute dtype, over full_
  Tensor gather_input_;  // the shard in the compute dtype while a gather is in flight
  std::shared_ptr<dist::Work> gather_work_;
  Tensor reduce_input_, reduce_output_;  // flat gradient and this rank's block, in flight
  std::shared_ptr<dist::Work> reduce_work_;
  uint64_t version_before_gather_ = 0;
  ShardState state_ = ShardState::sharded;
};

}  // namespace loom::fsdp
