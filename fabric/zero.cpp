// ZeRO stages 1 and 2: the partition, the stage-2 gradient reduce-scatter and the optimizer
// over this rank's pieces (fabric/zero.h, Note [ZeRO partition]).
#include "fabric/zero.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <set>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "tensor/native.h"

namespace loom {
namespace {

Tensor range(const Tensor& flat, int64_t begin, int64_t end) {
  return native::slice(flat, 0, begin, end, 1);
}

// The 1-D view of a contiguous tensor (a contiguous copy otherwise).
Tensor flat_of(const Tensor& t) {
  return native::reshape(t.is_contiguous() ? t : native::contiguous(t), {-1});
}

// The sorted union of every rank's names (a collective).
std::vector<std::string> all_gather_names(dist::ProcessGroup& group,
                                          const std::set<std::string>& mine) {
  std::string joined;
  for (const std::string& n : mine) joined += n + '\n';
  Tensor len = native::empty({1}, DType::i64, Device::cpu());
  len.data_ptr<int64_t>()[0] = int64_t(joined.size());
  std::vector<int64_t> lens = native::reshape(group.all_gather(len), {-1}).to_vector<int64_t>();
  int64_t longest = *std::max_element(lens.begin(), lens.end());
  std::set<std::string> all = mine;
  if (longest > 0) {  // the same on every rank, so every rank takes this branch or none
    Tensor bytes = native::empty({longest}, DType::u8, Device::cpu());
    native::fill_(bytes, 0);
    std::memcpy(bytes.raw_data_ptr(), joined.data(), joined.size());
    Tensor every = group.all_gather(bytes);
    const auto* data = static_cast<const char*>(every.raw_data_ptr());
    for (size_t r = 0; r < lens.size(); ++r) {
      std::string text(data + r * size_t(longest), size_t(lens[r]));
      for (size_t begin = 0, end; (end = text.find('\n', begin)) != std::string::npos;
           begin = end + 1)
        all.insert(text.substr(begin, end - begin));
    }
  }
  return {all.begin(), all.end()};
}

}  // namespace

// ---- ZeroPartition ----

ZeroPartition::ZeroPartition(std::vector<Tensor> params, std::vector<std::string> names,
                             std::shared_ptr<dist::ProcessGroup> group,
                             ZeroPartitionOptions options)
    : group_(std::move(group)), options_(options) {
  if (!group_) throw RuntimeError("deepspeed: no process group; call fabric.launch() first");
  if (options_.stage != 1 && options_.stage != 2)
    throw ValueError(
        detail::concat("deepspeed: a ZeRO partition serves stages 1 and 2, not ", options_.stage));
  if (options_.bucket_bytes <= 0 || options_.allgather_bytes <= 0)
    throw ValueError("deepspeed: bucket sizes must be positive (bytes); the defaults are 25 MiB");
  world_ = group_->size();
  rank_ = group_->rank();
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].requires_grad()) {
      params_.push_back(params[i]);
      names_.push_back(i < names.size() ? names[i] : detail::concat("parameter ", i));
    }
  // Buckets in reverse registration order, one dtype and device each, closed at bucket_bytes.
  where_.resize(params_.size());
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    bool fresh = buckets_.empty() || bytes >= options_.bucket_bytes ||
                 buckets_.back().dtype != p.dtype() || buckets_.back().device != p.device();
    if (fresh) {
      buckets_.emplace_back();
      buckets_.back().dtype = p.dtype();
      buckets_.back().device = p.device();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    where_[k] = {buckets_.size() - 1, b.slots.size()};
    b.slots.push_back(Slot{.param = k, .offset = b.numel, .numel = p.numel()});
    b.numel += p.numel();
    bytes += int64_t(p.nbytes());
  }
  // Even shards, padded; this rank's range of each parameter.
  for (Bucket& b : buckets_) {
    b.shard = std::max<int64_t>(1, (b.numel + world_ - 1) / world_);
    b.padded = b.shard * world_;
    const int64_t base = int64_t(rank_) * b.shard;
    for (Slot& s : b.slots) {
      int64_t lo = std::max(s.offset, base) - s.offset;
      int64_t hi = std::min(s.offset + s.numel, base + b.shard) - s.offset;
      if (hi > lo) {
        s.lo = lo;
        s.hi = hi;
        s.shard_offset = s.offset + lo - base;
      }
    }
    b.shard_params = native::empty({b.shard}, b.dtype, b.device);
    native::fill_(b.shard_params, 0.0);  // allocated now (and the padding stays zero)
  }
  pieces_.resize(params_.size());
  for (size_t k = 0; k < params_.size(); ++k) {
    const Bucket& b = buckets_[where_[k].first];
    const Slot& s = slot(k);
    Tensor piece =
        s.owned() ? range(b.shard_params, s.shard_offset, s.shard_offset + s.hi - s.lo).detach()
                  : native::empty({0}, b.dtype, b.device);
    piece.requires_grad_(true);
    pieces_[k] = piece;
    by_impl_.emplace_back(params_[k].impl(), k);
  }
  std::sort(by_impl_.begin(), by_impl_.end());
  if (options_.stage == 2)
    for (size_t k = 0; k < params_.size(); ++k)
      hook_ids_.push_back(
          params_[k].register_post_accumulate_grad_hook([this, k](Tensor&) { mark_ready(k); }));
  reset_readiness();
}

ZeroPartition::~ZeroPartition() {
  for (size_t k = 0; k < hook_ids_.size(); ++k) params_[k].remove_hook(hook_ids_[k]);
  // Collectives still in flight write into tensors this object holds.
  for (Bucket& b : buckets_) {
    if (!b.work) continue;
    try {
      b.work->wait();
    } catch (...) {  // the job is failing already; its error was or will be reported
    }
  }
}

std::optional<size_t> ZeroPartition::index_of(const Tensor& param) const {
  auto it = std::lower_bound(by_impl_.begin(), by_impl_.end(),
                             std::pair<const TensorImpl*, size_t>(param.impl(), 0));
  if (it == by_impl_.end() || it->first != param.impl()) return std::nullopt;
  return it->second;
}

int64_t ZeroPartition::owned_numel() const {
  int64_t n = 0;
  for (const Bucket& b : buckets_) n += b.shard;
  return n;
}

int64_t ZeroPartition::total_numel() const {
  int64_t n = 0;
  for (const Bucket& b : buckets_) n += b.numel;
  return n;
}

void ZeroPartition::load_shards(const std::vector<bool>& flagged) {
  NoGradGuard no_grad;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (!flagged[i]) continue;
    Bucket& b = buckets_[i];
    for (const Slot& s : b.slots)
      if (s.owned())
        native::copy_(range(b.shard_params, s.shard_offset, s.shard_offset + s.hi - s.lo),
                      range(flat_of(params_[s.param]), s.lo, s.hi));
  }
}

void ZeroPartition::bind_piece_grad(size_t k) {
  Tensor piece = pieces_[k];
  Tensor g = params_[k].grad();
  const Slot& s = slot(k);
  if (!s.owned() || !g.defined()) {
    piece.set_grad(Tensor());
    return;
  }
  piece.set_grad(range(flat_of(g), s.lo, s.hi));
}

void ZeroPartition::gather_parameters(const std::vector<bool>& flagged) {
  struct Flight {
    size_t bucket;
    Tensor out;
    std::shared_ptr<dist::Work> work;
  };
  std::deque<Flight> flights;
  int64_t bytes = 0;
  auto land = [&] {
    Flight f = std::move(flights.front());
    flights.pop_front();
    f.work->wait();
    bytes -= int64_t(f.out.nbytes());
    NoGradGuard no_grad;
    Tensor flat = native::reshape(f.out, {-1});
    for (const Slot& s : buckets_[f.bucket].slots) {
      const Tensor& p = params_[s.param];
      native::copy_(p, native::reshape(range(flat, s.offset, s.offset + s.numel), p.sizes()));
    }
  };
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (!flagged[i]) continue;
    const Bucket& b = buckets_[i];
    Tensor out = native::empty({int64_t(world_), b.shard}, b.dtype, b.device);
    flights.push_back({i, out, group_->all_gather_async(out, b.shard_params)});
    bytes += int64_t(out.nbytes());
    ++stats_.all_gathers;
    // allgather_bucket_mb bounds the gathered bytes held at once (one bucket at least).
    while (flights.size() > 1 && bytes > options_.allgather_bytes) land();
  }
  while (!flights.empty()) land();
}

Tensor ZeroPartition::all_gather_bucket(size_t b, const Tensor& shard) {
  const Bucket& bucket = buckets_[b];
  Tensor out = native::empty({int64_t(world_), bucket.shard}, shard.dtype(), bucket.device);
  group_->all_gather_async(out, native::contiguous(shard))->wait();
  return native::reshape(out, {-1});
}

void ZeroPartition::discard_stash(size_t k) {
  Bucket& b = buckets_[where_[k].first];
  const Slot& s = slot(k);
  if (b.stash_valid && b.partition_grad.defined() && s.owned())
    native::fill_(range(b.partition_grad, s.shard_offset, s.shard_offset + s.hi - s.lo), 0.0);
}

// ---- stage 2 ----

void ZeroPartition::reset_readiness() {
  ready_.assign(params_.size(), false);
  for (Bucket& b : buckets_) b.pending = b.slots.size();
  next_to_launch_ = 0;
}

void ZeroPartition::mark_ready(size_t k) {
  if (!sync_ || ready_[k]) return;
  ready_[k] = true;
  --buckets_[where_[k].first].pending;
  launch_ready(/*from_hook=*/true);
}

void ZeroPartition::launch_ready(bool from_hook) {
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_].pending == 0)
    launch(next_to_launch_++, from_hook);
}

void ZeroPartition::launch(size_t i, bool from_hook) {
  NoGradGuard no_grad;
  Bucket& b = buckets_[i];
  // The local gradients go into one padded buffer and are released: from here on this rank
  // keeps only its shard of them (after the reduce-scatter).
  b.flat = native::empty({b.padded}, b.dtype, b.device);
  for (const Slot& s : b.slots) {
    Tensor p = params_[s.param];
    Tensor g = p.grad();
    Tensor dst = range(b.flat, s.offset, s.offset + s.numel);
    if (g.defined())
      native::copy_(dst, flat_of(g));
    else
      native::fill_(dst, 0.0);  // unused this backward (find_unused_parameters)
    p.set_grad(Tensor());
  }
  if (b.padded > b.numel) native::fill_(range(b.flat, b.numel, b.padded), 0.0);
  b.reduced = native::empty({b.shard}, b.dtype, b.device);
  b.work = group_->reduce_scatter_async(b.reduced, b.flat, dist::ReduceOp::avg);
  ++(from_hook ? stats_.buckets_launched_during_backward : stats_.buckets_launched_at_finalize);
  in_flight_.push_back(i);
  // At most two buckets in flight: the oldest lands (and frees its flat buffer) first.
  while (in_flight_.size() > 2) {
    wait_bucket(buckets_[in_flight_.front()]);
    in_flight_.erase(in_flight_.begin());
  }
}

void ZeroPartition::wait_bucket(Bucket& b) {
  if (!b.work) return;
  std::shared_ptr<dist::Work> work = std::move(b.work);
  b.work = nullptr;
  work->wait();
  b.flat = Tensor();
}

void ZeroPartition::before_backward() {
  if (options_.stage != 2) return;
  NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    if (!b.presented) continue;
    b.presented = false;
    bool any = false;
    for (const Slot& s : b.slots) any = any || (s.owned() && params_[s.param].grad().defined());
    if (!any) {  // zeroed (set to none) since: nothing to carry over
      b.partition_grad = Tensor();
      b.stash_valid = false;
    } else {
      // What the user may have changed since (clipping, zero_grad(false)) is what counts; a
      // gradient that is a view of the partition gradient is already in place.
      for (const Slot& s : b.slots) {
        if (!s.owned()) continue;
        Tensor g = params_[s.param].grad();
        Tensor dst = range(b.partition_grad, s.shard_offset, s.shard_offset + s.hi - s.lo);
        if (!g.defined()) {
          native::fill_(dst, 0.0);
          continue;
        }
        Tensor src = range(flat_of(g), s.lo, s.hi);
        if (src.raw_data_ptr() != dst.raw_data_ptr()) native::copy_(dst, src);
      }
      b.stash_valid = true;
    }
    for (const Slot& s : b.slots)
      if (s.owned()) Tensor(params_[s.param]).set_grad(Tensor());
  }
}

void ZeroPartition::finalize() {
  if (options_.stage != 2 || !sync_) return;
  std::vector<size_t> unused;
  for (size_t k = 0; k < params_.size(); ++k)
    if (!ready_[k]) unused.push_back(k);
  if (!unused.empty()) {
    if (!options_.find_unused_parameters) {
      for (size_t i : in_flight_) wait_bucket(buckets_[i]);
      in_flight_.clear();
      reset_readiness();
      std::string list;
      for (size_t i = 0; i < unused.size() && i < 10; ++i)
        list += (i ? ", " : "") + names_[unused[i]];
      if (unused.size() > 10) list += ", ...";
      throw RuntimeError(detail::concat(
          "deepspeed: ", unused.size(),
          " parameter(s) received no gradient in this backward: ", list,
          ". Every rank must reduce every parameter; construct the deepspeed strategy with "
          "find_unused_parameters=true, or make sure the loss depends on all parameters"));
    }
    for (size_t k : unused) {
      ready_[k] = true;
      --buckets_[where_[k].first].pending;
    }
  }
  launch_ready(/*from_hook=*/false);
  for (size_t i : in_flight_) wait_bucket(buckets_[i]);
  in_flight_.clear();
  NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    if (b.stash_valid && b.partition_grad.defined())
      native::binary_(native::BinaryOp::add, b.partition_grad, b.reduced);
    else
      b.partition_grad = b.reduced;
    b.reduced = Tensor();
    b.stash_valid = false;
    b.presented = true;
    for (const Slot& s : b.slots) {
      if (!s.owned()) continue;
      Tensor p = params_[s.param];
      Tensor part = range(b.partition_grad, s.shard_offset, s.shard_offset + s.hi - s.lo);
      if (s.lo == 0 && s.hi == s.numel) {
        p.set_grad(native::reshape(part, p.sizes()));  // a view: no copy
      } else {
        Tensor g = native::empty(p.sizes(), p.dtype(), p.device());
        native::fill_(g, 0.0);
        native::copy_(range(native::reshape(g, {-1}), s.lo, s.hi), part);
        p.set_grad(g);
      }
    }
  }
  reset_readiness();
}

// ---- ZeroOptimizer ----

ZeroOptimizer::ZeroOptimizer(std::shared_ptr<optim::Optimizer> inner,
                             std::vector<std::shared_ptr<ZeroPartition>> partitions)
    : optim::Optimizer("ZeRO(" + inner->name() + ")", inner->defaults()), inner_(std::move(inner)) {
  for (const auto& group : std::as_const(*inner_).param_groups())
    for (const Tensor& p : group.params) {
      bool found = false;
      for (size_t j = 0; j < partitions.size() && !found; ++j) {
        std::optional<size_t> k = partitions[j]->index_of(p);
        if (!k) continue;
        found = true;
        size_t owner = 0;
        while (owner < partitions_.size() && partitions_[owner] != partitions[j]) ++owner;
        if (owner == partitions_.size()) {
          partitions_.push_back(partitions[j]);
          buckets_used_.emplace_back(partitions[j]->num_buckets(), false);
        }
        bindings_.push_back({partitions[j].get(), *k, owner});
        buckets_used_[owner][partitions[j]->bucket_of(*k)] = true;
      }
      if (!found)
        throw ValueError(detail::concat(
            "deepspeed: a parameter of shape ", shape_str(p.sizes()), " of the ", inner_->name(),
            " optimizer is not a trainable parameter of a module set up with the deepspeed "
            "strategy; set the module up first and build the optimizer from its parameters()"));
    }
  // State the optimizer already has (loaded before set-up) is cut to this rank's ranges.
  optim::OptimizerStateDict before = inner_->state_dict();
  bool had_state = !before.state.empty();
  if (had_state) {
    optim::OptimizerStateDict none = before;
    none.state.clear();
    inner_->load_state_dict(none);
  }
  optim::OptimizerStateDict local = had_state ? to_local(before) : optim::OptimizerStateDict{};
  std::unordered_map<TensorImpl*, Tensor> to_piece;
  for (const Binding& b : bindings_)
    to_piece.emplace(b.partition->param(b.k).impl(), b.partition->piece(b.k));
  inner_->replace_parameters(to_piece);
  if (had_state) inner_->load_state_dict(local);
}

void ZeroOptimizer::step() {
  for (size_t j = 0; j < partitions_.size(); ++j) partitions_[j]->load_shards(buckets_used_[j]);
  for (const Binding& b : bindings_) b.partition->bind_piece_grad(b.k);
  inner_->step();
  for (size_t j = 0; j < partitions_.size(); ++j)
    partitions_[j]->gather_parameters(buckets_used_[j]);
}

void ZeroOptimizer::zero_grad(bool set_to_none) {
  for (const Binding& b : bindings_) {
    Tensor p = b.partition->param(b.k);
    if (Tensor g = p.grad(); g.defined()) {
      if (set_to_none)
        p.set_grad(Tensor());
      else
        native::fill_(g, 0.0);
    }
    Tensor(b.partition->piece(b.k)).set_grad(Tensor());
    b.partition->discard_stash(b.k);
  }
}

void ZeroOptimizer::add_param_group(optim::ParamGroup) {
  throw ValueError(
      "deepspeed: add_param_group after setup is not supported (the partition of "
      "the parameters is fixed at setup); add every group to the optimizer before "
      "fabric.setup()");
}

int64_t ZeroOptimizer::replace_parameters(
    const std::unordered_map<TensorImpl*, Tensor>& old_to_new) {
  if (old_to_new.empty()) return 0;
  throw ValueError(
      "deepspeed: replace_parameters after setup is not supported (the optimizer "
      "steps this rank's partition of the parameters it was set up with)");
}

const optim::ParamState* ZeroOptimizer::state(const Tensor& param) const {
  for (const auto& part : partitions_)
    if (std::optional<size_t> k = part->index_of(param)) return inner_->state(part->piece(*k));
  return inner_->state(param);
}

optim::OptimizerStateDict ZeroOptimizer::to_local(const optim::OptimizerStateDict& dict) const {
  const auto& groups = std::as_const(*inner_).param_groups();
  bool fits = dict.param_groups.size() == groups.size();
  for (size_t g = 0; fits && g < groups.size(); ++g)
    fits = dict.param_groups[g].params.size() == groups[g].params.size();
  if (!fits) return dict;  // the wrapped optimizer's check names the mismatch
  std::unordered_map<int64_t, size_t> position;
  size_t next = 0;
  for (const auto& g : dict.param_groups)
    for (int64_t index : g.params)
      if (!position.emplace(index, next++).second) return dict;  // likewise
  optim::OptimizerStateDict out;
  out.param_groups = dict.param_groups;
  for (const auto& [index, saved] : dict.state) {
    auto it = position.find(index);
    if (it == position.end()) {
      out.state.emplace(index, saved);
      continue;
    }
    const Binding& b = bindings_[it->second];
    const Tensor& p = b.partition->param(b.k);
    const int64_t lo = b.partition->owned_begin(b.k), hi = b.partition->owned_end(b.k);
    if (hi == lo) continue;  // another rank's
    optim::ParamState st;
    st.step = saved.step;
    for (const auto& [key, buf] : saved.buffers) {
      if (buf.defined() && buf.sizes() == p.sizes()) {
        st.buffers.emplace(key, range(flat_of(buf), lo, hi));
      } else if (!buf.defined() || (buf.dim() == 1 && buf.numel() == hi - lo)) {
        st.buffers.emplace(key, buf);
      } else {
        throw ValueError(detail::concat(
            inner_->name(), ": state '", key, "' of parameter ", index, " has shape ",
            shape_str(buf.sizes()), "; expected the parameter's shape ", shape_str(p.sizes()),
            " (the full state a checkpoint holds) or this rank's partition of it, [", hi - lo,
            "]"));
      }
    }
    out.state.emplace(index, std::move(st));
  }
  return out;
}

void ZeroOptimizer::load_state_dict(const optim::OptimizerStateDict& dict) {
  inner_->load_state_dict(to_local(dict));
}

void ZeroOptimizer::check_state_dict(const optim::OptimizerStateDict& dict,
                                     bool exact_dtypes) const {
  inner_->check_state_dict(to_local(dict), exact_dtypes);
}

int64_t ZeroOptimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const Binding& b : bindings_)
    if (const optim::ParamState* s = inner_->state(b.partition->piece(b.k)))
      for (const auto& [key, buf] : s->buffers) bytes += int64_t(buf.nbytes());
  return bytes;
}

optim::OptimizerStateDict ZeroOptimizer::full_state_dict() const {
  optim::OptimizerStateDict local = inner_->state_dict();  // indices = positions
  optim::OptimizerStateDict full;
  full.param_groups = local.param_groups;
  if (partitions_.empty()) return full;
  dist::ProcessGroup& group = partitions_.front()->group();
  // 1. Every buffer name any rank keeps.
  std::set<std::string> mine;
  for (const auto& [index, st] : local.state)
    for (const auto& [key, buf] : st.buffers) mine.insert(key);
  const std::vector<std::string> names = all_gather_names(group, mine);
  // 2. Per parameter: its step and which buffers it has (max over ranks; -1 / 0 for none).
  //    Every owner of a part of a parameter stepped it as often as the others.
  const int64_t cols = 1 + int64_t(names.size());
  const size_t count = bindings_.size();
  Tensor meta = native::empty({int64_t(count), cols}, DType::f64, Device::cpu());
  native::fill_(meta, -1.0);
  double* m = meta.data_ptr<double>();
  for (const auto& [index, st] : local.state) {
    if (index < 0 || size_t(index) >= count) continue;
    m[index * cols] = double(st.step);
    for (const auto& [key, buf] : st.buffers)
      m[index * cols + 1 + (std::lower_bound(names.begin(), names.end(), key) - names.begin())] =
          1.0;
  }
  group.all_reduce(meta, dist::ReduceOp::max);
  m = meta.data_ptr<double>();
  for (size_t i = 0; i < count; ++i)
    if (m[i * cols] >= 0) full.state[int64_t(i)].step = int64_t(m[i * cols]);
  // 3. Each buffer, bucket by bucket: the shards gathered into full buckets, cut into the
  //    parameters. Every rank walks the same partitions, buckets and names.
  NoGradGuard no_grad;
  for (size_t j = 0; j < partitions_.size(); ++j) {
    ZeroPartition& part = *partitions_[j];
    for (size_t b = 0; b < part.num_buckets(); ++b) {
      if (!buckets_used_[j][b]) continue;
      std::vector<size_t> here;  // positions whose parameter lies in this bucket
      for (size_t i = 0; i < count; ++i)
        if (bindings_[i].owner == j && part.bucket_of(bindings_[i].k) == b) here.push_back(i);
      for (size_t t = 0; t < names.size(); ++t) {
        bool any = false;
        for (size_t i : here) any = any || m[i * cols + 1 + int64_t(t)] > 0;
        if (!any) continue;
        const Tensor& first = part.param(bindings_[here.front()].k);
        Tensor shard = native::empty({part.shard_numel(b)}, first.dtype(), first.device());
        native::fill_(shard, 0.0);
        for (size_t i : here) {
          const size_t k = bindings_[i].k;
          auto st = local.state.find(int64_t(i));
          if (st == local.state.end()) continue;
          auto buf = st->second.buffers.find(names[t]);
          if (buf == st->second.buffers.end() || part.owned_end(k) == part.owned_begin(k)) continue;
          const int64_t at = part.shard_offset(k);
          native::copy_(range(shard, at, at + part.owned_end(k) - part.owned_begin(k)),
                        flat_of(buf->second));
        }
        Tensor flat = part.all_gather_bucket(b, shard);
        for (size_t i : here) {
          if (m[i * cols + 1 + int64_t(t)] <= 0) continue;
          const size_t k = bindings_[i].k;
          const Tensor& p = part.param(k);
          const int64_t at = part.bucket_offset(k);
          full.state[int64_t(i)].buffers[names[t]] =
              native::clone(native::reshape(range(flat, at, at + p.numel()), p.sizes()));
        }
      }
    }
  }
  return full;
}

}  // namespace loom
