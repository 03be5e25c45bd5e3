#include "fabric/fsdp_unit.h"

#include "autograd/grad_mode.h"
#include "core/error.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom::fsdp {

const char* state_name(ShardState s) {
  switch (s) {
    case ShardState::sharded: return "sharded";
    case ShardState::gathering: return "gathering";
    case ShardState::gathered: return "gathered";
  }
  return "?";
}

Tensor flat_span(const Tensor& flat, int64_t start, int64_t len) {
  return native::slice(flat, 0, start, start + len, 1);
}

namespace {

// A tensor over `storage` (no autograd history): the unit's own handles on its buffers.
Tensor view_of(const std::shared_ptr<Storage>& storage, const Shape& sizes, int64_t offset,
               DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage;
  impl->sizes = sizes;
  impl->strides = contiguous_strides(sizes);
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

}  // namespace

FlatUnit::FlatUnit(std::string name, std::vector<FlatParam> params, DType master, DType compute,
                   DType reduce, int rank, int world)
    : name_(std::move(name)),
      params_(std::move(params)),
      master_(master),
      compute_(compute),
      reduce_(reduce),
      rank_(rank),
      world_(world) {
  for (FlatParam& p : params_) {
    p.offset = numel_;
    p.numel = shape_numel(p.shape);
    numel_ += p.numel;
  }
  padded_ = (numel_ + world_ - 1) / world_ * world_;
  if (padded_ == 0) padded_ = world_;  // a unit without elements still takes part in gathers
}

void FlatUnit::set_shard(Tensor shard) {
  LOOM_CHECK(shard.numel() == shard_numel() && shard.dtype() == master_, "fsdp: bad shard");
  shard_ = std::move(shard);
}

void FlatUnit::bind_parameters() {
  full_ = std::make_shared<Storage>(size_t(padded_) * dtype_size(compute_), Device::cpu(),
                                    /*lazy=*/true);
  full_flat_ = view_of(full_, {padded_}, 0, compute_);
  refusal_ = make_refusal();
  for (FlatParam& p : params_) {
    TensorImpl* impl = p.param.impl();
    impl->storage = full_;
    impl->sizes = p.shape;
    impl->strides = contiguous_strides(p.shape);
    impl->offset = p.offset;
    impl->dtype = compute_;
    impl->grad.reset();
  }
  reshard();
}

void FlatUnit::gather_async(dist::ProcessGroup& group) {
  if (state_ != ShardState::sharded) return;
  NoGradGuard no_grad;
  version_before_gather_ = full_->version();
  full_->reacquire();
  // The shard in the compute dtype (a copy only when it differs from the master dtype); kept
  // alive until the gather completes.
  gather_input_ = shard_.dtype() == compute_ ? shard_.detach() : native::to(shard_.detach(), Device::cpu(), compute_);
  // full_flat_ viewed as (W, S): rank r's shard lands in row r, which is its own range of flat.
  Tensor out = native::view(full_flat_, {int64_t(world_), shard_numel()});
  gather_work_ = group.all_gather_async(out, gather_input_);
  state_ = ShardState::gathering;
}

void FlatUnit::wait_gathered() {
  if (state_ != ShardState::gathering) return;
  gather_work_->wait();
  gather_work_.reset();
  // A gather writes the shards' values, which no in-place op changed since the last gather
  // (the optimizer steps only between backward and the next forward, when no graph holds
  // the parameters): not a modification that should fail tensors saved for backward.
  full_->restore_version(version_before_gather_);
  gather_input_ = Tensor();
  state_ = ShardState::gathered;
}

void FlatUnit::reshard() {
  if (state_ == ShardState::gathering) wait_gathered();  // the peer ranks are in this gather too
  full_->release(refusal_);
  state_ = ShardState::sharded;
}

Storage::Refusal FlatUnit::make_refusal() const {
  // Built once: reshard() runs for every unit twice a step. The message names the parameter
  // at the offset of the view that asked.
  std::string unit = name_.empty() ? "the root unit" : "unit '" + name_ + "'";
  auto ranges = std::make_shared<std::vector<std::pair<int64_t, std::string>>>();
  for (const FlatParam& p : params_) ranges->emplace_back(p.offset, p.name);
  return [unit, ranges](int64_t offset) {
    std::string who = "a parameter of " + unit;
    for (auto it = ranges->rbegin(); it != ranges->rend(); ++it)
      if (offset >= it->first) {
        who = "parameter '" + it->second + "' (" + unit + ")";
        break;
      }
    return "fsdp: " + who + " is sharded (state: sharded): its values exist only while its "
           "unit is gathered, inside the unit's forward and backward. Outside them, read the "
           "model through state_dict(), which gathers unit by unit, or step the shards that "
           "the set-up module's parameters() returns";
  };
}

void FlatUnit::reduce_gradients_async(dist::ProcessGroup& group) {
  finish_reduce();  // one in flight per unit at a time
  NoGradGuard no_grad;
  // Flat gradient in the reduce dtype; padding and missing gradients are zeros.
  Tensor flat = zeros({padded_}, reduce_);
  for (FlatParam& p : params_) {
    Tensor g = p.param.grad();
    if (!g.defined()) continue;
    native::copy_(native::view(flat_span(flat, p.offset, p.numel), p.shape), g);
    p.param.set_grad(Tensor());
  }
  reduce_input_ = flat;
  reduce_output_ = empty({shard_numel()}, reduce_);  // this rank's block
  reduce_work_ = group.reduce_scatter_async(reduce_output_, reduce_input_, dist::ReduceOp::avg);
}

void FlatUnit::finish_reduce() {
  if (!reduce_work_) return;
  reduce_work_->wait();
  reduce_work_.reset();
  NoGradGuard no_grad;
  Tensor mine = reduce_output_;
  reduce_input_ = reduce_output_ = Tensor();
  if (mine.dtype() != master_) mine = native::to(mine, Device::cpu(), master_);
  Tensor g = shard_.grad();
  if (g.defined()) {
    native::binary_(native::BinaryOp::add, g, mine);
  } else {
    shard_.set_grad(mine);
  }
}

}  // namespace loom::fsdp
