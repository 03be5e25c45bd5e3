#include "fabric/reducer.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "tensor/native.h"

namespace loom {
namespace {
// PyTorch's DDP uses the same 1 MiB first bucket (first_bucket_bytes).
constexpr int64_t kFirstBucketBytes = int64_t(1) << 20;
}  // namespace

Reducer::Reducer(std::vector<Tensor> params, std::vector<std::string> names,
                 std::shared_ptr<dist::ProcessGroup> group, int64_t bucket_bytes,
                 bool find_unused_parameters, bool gradient_as_bucket_view)
    : params_(std::move(params)), names_(std::move(names)), group_(std::move(group)),
      find_unused_(find_unused_parameters), as_view_(gradient_as_bucket_view) {
  if (bucket_bytes <= 0)
    throw ValueError("ddp: bucket size must be positive (bytes); the default is 25 MiB");
  // Reverse registration order; a bucket holds one dtype and closes at bucket_bytes. The
  // first bucket closes at kFirstBucketBytes already: the last layers' gradients come first,
  // and a small bucket starts communication while backward still has most of its work ahead
  // (otherwise a model under bucket_bytes is one bucket that waits for the whole backward).
  bucket_of_.assign(params_.size(), 0);
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    if (!p.requires_grad()) continue;
    int64_t cap = buckets_.size() == 1 ? std::min(bucket_bytes, kFirstBucketBytes) : bucket_bytes;
    bool new_bucket = buckets_.empty() || bytes >= cap ||
                      params_[buckets_.back().params.front()].dtype() != p.dtype();
    if (new_bucket) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().params.push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    bytes += int64_t(p.nbytes());
  }
  for (Bucket& b : buckets_) {
    int64_t n = 0;
    for (size_t k : b.params) n += params_[k].numel();
    const Tensor& first = params_[b.params.front()];
    b.flat = native::empty({n}, first.dtype(), first.device());
    int64_t offset = 0;
    for (size_t k : b.params) {
      const Tensor& p = params_[k];
      b.views.push_back(native::reshape(
          native::slice(b.flat, 0, offset, offset + p.numel(), 1), p.sizes()));
      offset += p.numel();
    }
  }
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].requires_grad())
      hook_ids_.push_back(params_[k].register_post_accumulate_grad_hook(
          [this, k](Tensor&) { mark_ready(k); }));
  reset();
}

Reducer::~Reducer() {
  size_t h = 0;
  for (Tensor& p : params_)
    if (p.requires_grad() && h < hook_ids_.size()) p.remove_hook(hook_ids_[h++]);
}

void Reducer::reset() {
  ready_.assign(params_.size(), false);
  for (Bucket& b : buckets_) {
    b.pending = b.params.size();
    b.work = nullptr;
  }
  next_to_launch_ = 0;
}

void Reducer::mark_ready(size_t k) {
  if (!sync_ || ready_[k]) return;
  ready_[k] = true;
  --buckets_[bucket_of_[k]].pending;
  launch_ready_buckets(/*from_hook=*/true);
}

void Reducer::launch_ready_buckets(bool from_hook) {
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_].pending == 0) {
    if (stats_.buckets_launched_during_backward + stats_.buckets_launched_at_finalize == 0)
      stats_.first_launch = std::chrono::steady_clock::now();
    launch(buckets_[next_to_launch_++]);
    ++(from_hook ? stats_.buckets_launched_during_backward : stats_.buckets_launched_at_finalize);
  }
}

void Reducer::launch(Bucket& b) {
  NoGradGuard no_grad;
  // The gradients go to the process group as they are; the group reads them straight into
  // its transfer buffers (shared memory) or gathers them into the bucket first (Gloo). A
  // gradient that already is its bucket view (accumulated in place since the last
  // synchronised step) is the bucket's own slice at its own offset, which the group allows.
  std::vector<Tensor> parts;
  parts.reserve(b.params.size());
  for (size_t i = 0; i < b.params.size(); ++i) {
    const Tensor& g = params_[b.params[i]].grad();
    if (g.defined()) {
      parts.push_back(g.is_contiguous() ? g : native::contiguous(g));
    } else {
      native::fill_(b.views[i], 0.0);  // an unused parameter (find_unused_parameters)
      parts.push_back(b.views[i]);
    }
  }
  // avg: the group divides by the world size as part of the reduction.
  b.work = group_->all_reduce_coalesced_async(b.flat, parts, dist::ReduceOp::avg);
}

void Reducer::finalize() {
  if (!sync_) return;
  stats_.backward_end = std::chrono::steady_clock::now();
  std::vector<std::string> unused;
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].requires_grad() && !ready_[k]) unused.push_back(names_[k]);
  if (!unused.empty()) {
    if (!find_unused_) {
      // Wait for what is in flight, so the group stays usable, then report.
      for (Bucket& b : buckets_)
        if (b.work) b.work->wait();
      reset();
      std::string list;
      for (size_t i = 0; i < unused.size() && i < 10; ++i) list += (i ? ", " : "") + unused[i];
      if (unused.size() > 10) list += ", ...";
      throw RuntimeError(detail::concat(
          "ddp: ", unused.size(), " parameter(s) received no gradient in this backward: ", list,
          ". Every rank must reduce every parameter; construct the DDP strategy with "
          "find_unused_parameters=true, or make sure the loss depends on all parameters"));
    }
    for (size_t k = 0; k < params_.size(); ++k)
      if (params_[k].requires_grad() && !ready_[k]) {
        ready_[k] = true;
        --buckets_[bucket_of_[k]].pending;
      }
  }
  launch_ready_buckets(/*from_hook=*/false);
  NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    b.work->wait();
    for (size_t i = 0; i < b.params.size(); ++i) {
      Tensor& p = params_[b.params[i]];
      const Tensor& view = b.views[i];
      if (as_view_) {
        if (!p.grad().defined() || p.grad().raw_data_ptr() != view.raw_data_ptr()) p.set_grad(view);
      } else if (p.grad().defined()) {
        native::copy_(p.grad(), view);
      } else {
        p.set_grad(native::clone(view));
      }
    }
  }
  reset();
}

}  // namespace loom
