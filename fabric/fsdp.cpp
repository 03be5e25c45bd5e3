#include "fabric/fsdp.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "fabric/sharded_checkpoint.h"
#include "fabric/wrappers.h"
#include "nn/init.h"
#include "tensor/defaults.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom {

using fsdp::FlatUnit;
using fsdp::ShardState;

// ---- FullyShardedModule ----

FullyShardedModule::FullyShardedModule(std::shared_ptr<nn::Module> module,
                                       std::vector<std::unique_ptr<FlatUnit>> units,
                                       std::vector<nn::Module*> unit_modules,
                                       std::shared_ptr<dist::ProcessGroup> group,
                                       const FSDPOptions& options)
    : WrapperModule(std::move(module), "fsdp"),
      units_(std::move(units)),
      unit_modules_(std::move(unit_modules)),
      group_(std::move(group)),
      options_(options),
      position_(units_.size(), 0),
      grads_ready_(units_.size(), 0),
      grads_needed_(units_.size(), 0),
      reduced_(units_.size(), false) {
  for (size_t u = 1; u < units_.size(); ++u) {
    nn::Module* m = unit_modules_[u];
    int pre = m->register_forward_pre_hook([this, u](nn::Module&, const Tensor&) {
      before_unit_forward(u);
      return std::optional<Tensor>();
    });
    int post = m->register_forward_hook([this, u](nn::Module&, const Tensor&, const Tensor& out) {
      after_unit_forward(u, out);
      return std::optional<Tensor>();
    });
    hooks_.emplace_back(m, pre);
    hooks_.emplace_back(m, post);
  }
  for (size_t u = 0; u < units_.size(); ++u)
    for (fsdp::FlatParam& p : units_[u]->params())
      if (p.param.requires_grad()) {
        ++grads_needed_[u];
        grad_hooks_.emplace_back(p.param, p.param.register_post_accumulate_grad_hook(
                                              [this, u](Tensor&) { on_parameter_gradient(u); }));
      }
}

FullyShardedModule::~FullyShardedModule() {
  for (auto& [m, id] : hooks_) m->remove_hook(id);
  for (auto& [p, id] : grad_hooks_) p.remove_hook(id);
}

void FullyShardedModule::walk_parameters(ParameterWalk& walk, bool) const {
  for (const auto& u : units_) {
    walk.list.push_back(u->shard());
    if (walk.named) walk.names.push_back(walk.prefix + (u->name().empty() ? "" : u->name() + ".") + "flat_param");
  }
}

int64_t FullyShardedModule::largest_unit_numel() const {
  int64_t n = 0;
  for (const auto& u : units_) n = std::max(n, u->padded_numel());
  return n;
}

Tensor FullyShardedModule::forward(const Tensor& x) {
  if (GradMode::is_enabled()) pending_backward_ = true;
  units_[0]->gather(*group_);  // the root unit stays gathered until the end of backward
  if (!order_recorded_) forward_order_.clear();
  Tensor out = (*inner_)(x);
  if (!order_recorded_) {
    for (size_t k = 0; k < forward_order_.size(); ++k) position_[forward_order_[k]] = k;
    order_recorded_ = true;
  }
  if (!GradMode::is_enabled()) units_[0]->reshard();
  return out;
}

void FullyShardedModule::prefetch(size_t u) {
  if (options_.prefetch) units_[u]->gather_async(*group_);
}

void FullyShardedModule::before_unit_forward(size_t u) {
  if (!order_recorded_) forward_order_.push_back(u);
  units_[u]->gather(*group_);
  if (order_recorded_ && position_[u] + 1 < forward_order_.size())
    prefetch(forward_order_[position_[u] + 1]);
}

void FullyShardedModule::after_unit_forward(size_t u, const Tensor& output) {
  bool backward_follows = GradMode::is_enabled() && output.defined() && output.requires_grad();
  if (options_.reshard_after_forward || !backward_follows) units_[u]->reshard();
  if (backward_follows) {
    Tensor out = output;  // a handle: the hook goes on the output's own node
    out.register_hook([this, u](const Tensor&) {
      before_unit_backward(u);
      return Tensor();
    });
  }
}

void FullyShardedModule::before_unit_backward(size_t u) {
  units_[u]->gather(*group_);
  if (order_recorded_ && position_[u] > 0) prefetch(forward_order_[position_[u] - 1]);
}

void FullyShardedModule::on_parameter_gradient(size_t u) {
  if (!sync_) return;
  FlatUnit& unit = *units_[u];
  if (++grads_ready_[u] < grads_needed_[u]) return;
  // The unit's backward is complete: its gradients are final and its parameters unneeded.
  unit.reduce_gradients_async(*group_);
  reduced_[u] = true;
  if (u != 0) unit.reshard();
  // Finish the oldest reductions beyond kMaxReducesInFlight: each frees a padded flat gradient.
  reducing_.push_back(u);
  while (reducing_.size() > fsdp::kMaxReducesInFlight) {
    units_[reducing_.front()]->finish_reduce();
    reducing_.pop_front();
  }
}

void FullyShardedModule::finalize_backward() {
  pending_backward_ = false;
  // Units the hooks did not reduce (some parameter got no gradient) are reduced now, in unit
  // order on every rank, so the collectives still match.
  for (size_t u = 0; u < units_.size(); ++u)
    if (sync_ && !reduced_[u]) units_[u]->reduce_gradients_async(*group_);
  reducing_.clear();
  for (size_t u = 0; u < units_.size(); ++u) {
    units_[u]->finish_reduce();
    units_[u]->reshard();
    grads_ready_[u] = 0;
    reduced_[u] = false;
  }
}

nn::StateDict FullyShardedModule::state_dict() const {
  // Unit by unit: gather, copy out this unit's tensors, free. Every rank takes part in the
  // gathers; each keeps the values (so no rank holds more than the state dict plus one unit).
  nn::StateDict gathered;
  NoGradGuard no_grad;
  for (const auto& u : units_) {
    bool was_sharded = u->state() == ShardState::sharded;
    u->gather(*group_);
    for (const fsdp::FlatParam& p : u->params())
      gathered.insert(p.name, native::to(native::clone(p.param.detach()), Device::cpu(), u->master_dtype()));
    if (was_sharded) u->reshard();
  }
  // Parameters in the module's order, then its persistent buffers.
  nn::StateDict out;
  for (const auto& [n, _] : inner_->named_parameters())
    if (const Tensor* t = gathered.find(n)) out.insert(n, *t);
  for (const auto& [n, b] : inner_->state_dict())
    if (!out.contains(n)) out.insert(n, b);
  return out;
}

nn::LoadStateDictResult FullyShardedModule::load_state_dict(const nn::StateDict& state, bool strict) {
  nn::LoadStateDictResult r;
  std::unordered_set<std::string> known;
  for (const auto& u : units_)
    for (const fsdp::FlatParam& p : u->params()) {
      known.insert(p.name);
      const Tensor* t = state.find(p.name);
      if (!t) {
        r.missing_keys.push_back(p.name);
      } else if (t->sizes() != p.shape) {
        throw ValueError(detail::concat("load_state_dict: shape mismatch for '", p.name,
                                        "': the state has ", shape_str(t->sizes()),
                                        ", the module has ", shape_str(p.shape)));
      }
    }
  for (const auto& [n, b] : inner_->named_buffers()) known.insert(n);
  for (const auto& [n, _] : state)
    if (!known.count(n)) r.unexpected_keys.push_back(n);
  if (strict && (!r.missing_keys.empty() || !r.unexpected_keys.empty()))
    throw ValueError(detail::concat("load_state_dict: ", r.missing_keys.size(), " missing and ",
                                    r.unexpected_keys.size(), " unexpected keys",
                                    r.missing_keys.empty() ? "" : " (missing: " + r.missing_keys[0] + ", ...)",
                                    r.unexpected_keys.empty() ? "" : " (unexpected: " + r.unexpected_keys[0] + ", ...)"));
  // Each rank copies the part of every full tensor that falls in its shard.
  NoGradGuard no_grad;
  for (const auto& u : units_) {
    const int64_t begin = u->shard_begin(), end = begin + u->shard_numel();
    for (const fsdp::FlatParam& p : u->params()) {
      const Tensor* t = state.find(p.name);
      const int64_t lo = std::max(begin, p.offset), hi = std::min(end, p.offset + p.numel);
      if (!t || lo >= hi) continue;
      Tensor flat = native::view(native::contiguous(t->detach()), {p.numel});
      native::copy_(fsdp::flat_span(u->shard().detach(), lo - begin, hi - lo),
                    fsdp::flat_span(flat, lo - p.offset, hi - lo));
    }
  }
  for (const auto& [n, b] : inner_->named_buffers())
    if (const Tensor* t = state.find(n)) native::copy_(b, *t);
  return r;
}

// ---- FSDPStrategy ----

namespace {

struct FSDPSyncOff {
  explicit FSDPSyncOff(FullyShardedModule* m) : module(m), saved(m->sync()) { m->set_sync(false); }
  ~FSDPSyncOff() { module->set_sync(saved); }
  FullyShardedModule* module;
  bool saved;
};

}  // namespace

FSDPStrategy::FSDPStrategy(FSDPOptions options) : DDPStrategy(options.ddp), options_(std::move(options)) {
  check_state_dict_type(options_.state_dict_type, "fsdp");
}

ScopeStack FSDPStrategy::module_init_context(std::optional<bool> empty_init) {
  ScopeStack s;
  // nullopt and true: meta, so that no rank ever holds the full model; setup_module()
  // initialises each rank's shards (Note [Shard-only init]).
  if (empty_init.value_or(true)) {
    s.push<DefaultDeviceGuard>(Device::meta());
    s.push<nn::init::InitTableGuard>(nn::init::empty_init_table());
  } else {
    s.push<DefaultDeviceGuard>(root_device());
  }
  s.push(precision_->module_init_context());
  return s;
}

std::shared_ptr<nn::Module> FSDPStrategy::setup_module(std::shared_ptr<nn::Module> module) {
  const std::shared_ptr<dist::ProcessGroup>& group = process_group();
  if (!group)
    throw RuntimeError("fsdp: the process group is not up; call fabric.launch() before setup");
  std::vector<nn::Module*> modules;
  std::vector<std::string> names;
  auto plan = fsdp::plan_units(*module, options_, modules, names);
  std::vector<std::unique_ptr<FlatUnit>> units;
  for (size_t u = 0; u < plan.size(); ++u) {
    std::vector<fsdp::FlatParam> params;
    DType master = DType::f32;
    for (auto& [name, p] : plan[u]) {
      if (!params.empty() && p.dtype() != master)
        throw ValueError(detail::concat("fsdp: unit '", names[u], "' mixes dtypes (", master,
                                        " and ", p.dtype(), " at '", name, "'); give its "
                                        "parameters one dtype, or wrap them in separate units"));
      master = p.dtype();
      params.push_back({name, p, p.sizes()});
    }
    DType compute = options_.param_dtype.value_or(master);
    DType reduce = options_.reduce_dtype.value_or(compute);
    units.push_back(std::make_unique<FlatUnit>(names[u], std::move(params), master, compute,
                                               reduce, group->rank(), group->size()));
  }
  fsdp::materialize_shards(*module, units, *group);
  for (auto& u : units) u->bind_parameters();
  auto wrapped = std::make_shared<FullyShardedModule>(module, std::move(units), std::move(modules),
                                                      group, options_);
  wrapped_.push_back(wrapped);
  return wrapped;
}

void FSDPStrategy::backward(const Tensor& loss) {
  precision_->pre_backward(loss).backward();
  for (auto& weak : wrapped_)
    if (auto m = weak.lock(); m && m->pending_backward()) m->finalize_backward();
}

ScopeStack FSDPStrategy::no_backward_sync(nn::Module& module) {
  auto* m = unwrap<FullyShardedModule>(&module);
  if (!m) throw ValueError("no_backward_sync: the module was not set up with the fsdp strategy");
  ScopeStack s;
  s.push<FSDPSyncOff>(m);
  return s;
}

double FSDPStrategy::reduce_norm_part(double part, bool inf_norm) {
  // Shards are disjoint (padding is zero), so the whole model's part is the sum (or max).
  return all_reduce(scalar_tensor(part, DType::f64), inf_norm ? ReduceOp::max : ReduceOp::sum)
      .item_double();
}

void FSDPStrategy::save_checkpoint(const std::string& path, const CheckpointState& state) {
  if (options_.state_dict_type == "sharded")
    return save_sharded_checkpoint(
        path, state, {.group = process_group().get(), .precision_state = precision_->state_dict()});
  for (const auto& [key, value] : state)
    if (std::holds_alternative<std::shared_ptr<optim::Optimizer>>(value))
      throw ValueError("save: under fsdp, saving optimizer state ('" + key + "') is not yet "
                       "available; save the model and plain values, or construct the strategy "
                       "with state_dict_type=\"sharded\", which saves it");
  // Every rank gathers the full state dicts (collectives); rank 0 writes them.
  struct Frozen : nn::Module {
    nn::StateDict sd;
    nn::StateDict state_dict() const override { return sd; }
  };
  CheckpointState full;
  for (const auto& [key, value] : state) {
    if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value)) {
      auto frozen = std::make_shared<Frozen>();
      frozen->sd = (*m)->state_dict();
      full[key] = std::shared_ptr<nn::Module>(frozen);
    } else {
      full[key] = value;
    }
  }
  DDPStrategy::save_checkpoint(path, full);
}

CheckpointState FSDPStrategy::load_checkpoint(const std::string& path, CheckpointState& state,
                                              bool strict) {
  if (!is_sharded_checkpoint_path(path)) return DDPStrategy::load_checkpoint(path, state, strict);
  std::map<std::string, double> precision_state;
  CheckpointState rest = load_sharded_checkpoint(
      path, state, strict, {.group = process_group().get()}, &precision_state);
  precision_->load_state_dict(precision_state);
  return rest;
}

}  // namespace loom
