// Reducer: DDP's gradient synchronisation, overlapped with backward.
//
// Parameters are grouped into buckets of about bucket_bytes (the first one 1 MiB), in reverse
// registration order (the order backward produces their gradients). Each parameter's
// post-accumulate-grad hook marks it ready; when every parameter of a bucket is ready, and
// every bucket before it has been launched, the bucket's gradients are all-reduced into one
// flat buffer (all_reduce_coalesced_async: over shared memory they go straight into the
// transfer slots, with no gathering copy) asynchronously, while backward goes on computing
// earlier layers. finalize(), at the end of
// backward, waits for the buckets in order and hands the averaged gradients back: by default
// (gradient_as_bucket_view) each parameter's .grad becomes its view into the bucket, so there
// is no copy back, and a gradient accumulated in place into that view (no_backward_sync, or
// no zero_grad) needs no copy in either. As with PyTorch's option of the same name, a .grad
// kept across steps is then overwritten by the next synchronised backward.
//
// Buckets launch in index order on every rank, so the ranks' collectives always match.
// Unused parameters (no gradient this backward): with find_unused_parameters they count as
// ready with zero gradients at finalize(); without it finalize() throws a RuntimeError
// naming them, instead of leaving the other ranks waiting.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "dist/process_group.h"
#include "tensor/tensor.h"

namespace loom {

struct ReducerStats {
  int64_t buckets_launched_during_backward = 0;  // overlap: launched from a hook
  int64_t buckets_launched_at_finalize = 0;
  std::chrono::steady_clock::time_point first_launch;
  std::chrono::steady_clock::time_point backward_end;
};

class Reducer {
 public:
  // names: the parameters' dotted names (for error messages), parallel to params.
  Reducer(std::vector<Tensor> params, std::vector<std::string> names,
          std::shared_ptr<dist::ProcessGroup> group, int64_t bucket_bytes,
          bool find_unused_parameters, bool gradient_as_bucket_view = true);
  ~Reducer();

  // Called by each parameter's post-accumulate-grad hook.
  void mark_ready(size_t param_index);
  // Waits for every bucket, averages, writes gradients back; resets for the next backward.
  void finalize();
  // Off during no_backward_sync: hooks do nothing and finalize() only resets.
  void set_sync(bool sync) { sync_ = sync; }
  bool sync() const { return sync_; }

  size_t num_buckets() const { return buckets_.size(); }
  const ReducerStats& stats() const { return stats_; }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    Tensor flat;                 // (sum of numels,) in the gradients' dtype
    std::vector<Tensor> views;   // per parameter: its part of flat, in its shape
    std::shared_ptr<dist::Work> work;
    size_t pending = 0;
  };
  void launch(Bucket& b);
  void launch_ready_buckets(bool from_hook);
  void reset();

  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::shared_ptr<dist::ProcessGroup> group_;
  bool find_unused_;
  bool as_view_;
  bool sync_ = true;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // param index -> bucket index
  std::vector<bool> ready_;
  std::vector<int> hook_ids_;
  size_t next_to_launch_ = 0;
  ReducerStats stats_;
};

}  // namespace loom
