// The deepspeed strategy (fabric/deepspeed.h): ZeRO stages 1 and 2 on top of DDPStrategy's
// launch and process group.
#include "fabric/deepspeed.h"

#include <iostream>
#include <map>
#include <set>

#include "autograd/grad_mode.h"
#include "fabric/sharded_checkpoint.h"
#include "fabric/wrappers.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom {
namespace {

constexpr const char* kValidStages =
    "valid stages: 1 (optimizer state partitioned), 2 (optimizer state and gradients "
    "partitioned), 3 (parameters partitioned too)";

int64_t mib_to_bytes(double mb) { return std::max<int64_t>(1, int64_t(mb * 1024.0 * 1024.0)); }

DDPOptions ddp_options_of(const DeepSpeedOptions& o) {
  return DDPOptions{.bucket_cap_mb = o.reduce_bucket_mb,
                    .find_unused_parameters = o.find_unused_parameters,
                    .gradient_as_bucket_view = true,
                    .spawn = false,
                    .timeout = o.timeout,
                    .debug_collectives = o.debug_collectives};
}

// Stage 3 is fsdp with deepspeed's names for the knobs.
FSDPOptions fsdp_options_of(const DeepSpeedOptions& o) {
  check_state_dict_type(o.state_dict_type, "deepspeed");  // before fsdp's check names fsdp
  return FSDPOptions{.wrap_module_types = o.stage3_wrap_module_types,
                     .min_num_params = o.stage3_min_num_params,
                     .ddp = ddp_options_of(o),
                     .state_dict_type = o.state_dict_type};
}

template <class T>
struct SyncOffGuard {
  explicit SyncOffGuard(T* t) : target(t), saved(t->sync()) { t->set_sync(false); }
  ~SyncOffGuard() { target->set_sync(saved); }
  T* target;
  bool saved;
};

// What a checkpoint saves for a ZeRO optimizer: its full state, gathered beforehand.
class GatheredState final : public optim::Optimizer {
 public:
  GatheredState(optim::OptimizerStateDict dict, const optim::Optimizer& like)
      : optim::Optimizer(like.name(), like.defaults()), dict_(std::move(dict)) {}
  optim::OptimizerStateDict state_dict() const override { return dict_; }

 protected:
  void check_options(const optim::HyperParams&) const override {}
  void step_group(optim::ParamGroup&) override {}

 private:
  optim::OptimizerStateDict dict_;
};

}  // namespace

// ---- ZeroDataParallel ----

ZeroDataParallel::ZeroDataParallel(std::shared_ptr<nn::Module> module,
                                   std::shared_ptr<ZeroPartition> partition,
                                   std::shared_ptr<Reducer> reducer)
    : WrapperModule(std::move(module), "ZeroDataParallel"),
      partition_(std::move(partition)),
      reducer_(std::move(reducer)) {}

Tensor ZeroDataParallel::forward(const Tensor& x) {
  if (GradMode::is_enabled()) pending_backward = true;
  return (*inner_)(x);
}

// ---- DeepSpeedStrategy ----

DeepSpeedStrategy::DeepSpeedStrategy(DeepSpeedOptions options)
    : FSDPStrategy(fsdp_options_of(options)), ds_(options) {
  if (ds_.stage < 1 || ds_.stage > 3)
    throw ValueError(detail::concat("deepspeed: stage=", ds_.stage, " is invalid; ", kValidStages));
  if (!(ds_.reduce_bucket_mb > 0))
    throw ValueError(detail::concat("deepspeed: reduce_bucket_mb=", ds_.reduce_bucket_mb,
                                    " is invalid; it must be > 0 (the default is 25)"));
  if (!(ds_.allgather_bucket_mb > 0))
    throw ValueError(detail::concat("deepspeed: allgather_bucket_mb=", ds_.allgather_bucket_mb,
                                    " is invalid; it must be > 0 (the default is 25)"));
}

void DeepSpeedStrategy::launch(const std::function<void()>& fn) {
  // Refused before any rank starts, so the job fails once with one message.
  if (auto* mixed = dynamic_cast<MixedPrecision*>(precision_.get()); mixed && mixed->scaler())
    throw ValueError(
        "deepspeed: precision '16-mixed' is not supported: its gradient scaler skips a step "
        "when the gradients it sees hold inf/nan, and under ZeRO each rank sees only its "
        "partition, so the ranks could disagree; use 'bf16-mixed', '32-true', 'bf16-true' or "
        "'16-true'");
  FSDPStrategy::launch(fn);
}

void DeepSpeedStrategy::setup_environment() {
  FSDPStrategy::setup_environment();
  if (ds_.offload_optimizer && global_rank() == 0)
    std::cout << "loom deepspeed: offload_optimizer=true has no effect on a CPU run: the "
                 "optimizer state already lives in host memory (partitioned, 1/"
              << world_size() << " per rank)" << std::endl;
}

void DeepSpeedStrategy::broadcast_from_rank0(nn::Module& module) {
  // One flat buffer per dtype: a model of many small tensors pays one collective's latency.
  NoGradGuard no_grad;
  std::map<DType, std::vector<Tensor>> by_dtype;
  for (const Tensor& t : module.parameters()) by_dtype[t.dtype()].push_back(t);
  for (const Tensor& t : module.buffers()) by_dtype[t.dtype()].push_back(t);
  for (auto& [dtype, list] : by_dtype) {
    int64_t n = 0;
    for (const Tensor& t : list) n += t.numel();
    if (n == 0) continue;
    Tensor flat = native::empty({n}, dtype, root_device());
    int64_t off = 0;
    for (const Tensor& t : list) {
      native::copy_(native::slice(flat, 0, off, off + t.numel(), 1), native::reshape(t, {-1}));
      off += t.numel();
    }
    process_group()->broadcast(flat, 0);
    off = 0;
    for (const Tensor& t : list) {
      native::copy_(t, native::reshape(native::slice(flat, 0, off, off + t.numel(), 1), t.sizes()));
      off += t.numel();
    }
  }
}

ScopeStack DeepSpeedStrategy::module_init_context(std::optional<bool> empty_init) {
  if (ds_.stage == 3) return FSDPStrategy::module_init_context(empty_init);
  return Strategy::module_init_context(empty_init);
}

void DeepSpeedStrategy::module_to_device(nn::Module& module) {
  if (ds_.stage == 3) return FSDPStrategy::module_to_device(module);
  Strategy::module_to_device(module);
}

std::shared_ptr<nn::Module> DeepSpeedStrategy::setup_module(std::shared_ptr<nn::Module> module) {
  if (ds_.stage == 3) return FSDPStrategy::setup_module(std::move(module));
  const auto& group = process_group();
  if (!group)
    throw RuntimeError("deepspeed: the process group is not set up; call fabric.launch() first");
  broadcast_from_rank0(*module);
  auto named = module->named_parameters();
  ZeroPartitionOptions po{.stage = ds_.stage,
                          .bucket_bytes = mib_to_bytes(ds_.reduce_bucket_mb),
                          .allgather_bytes = mib_to_bytes(ds_.allgather_bucket_mb),
                          .find_unused_parameters = ds_.find_unused_parameters};
  auto partition = std::make_shared<ZeroPartition>(named.values(), named.keys(), group, po);
  std::shared_ptr<Reducer> reducer;
  if (ds_.stage == 1)
    reducer =
        std::make_shared<Reducer>(named.values(), named.keys(), group, po.bucket_bytes,
                                  ds_.find_unused_parameters, /*gradient_as_bucket_view=*/true);
  auto wrapped = std::make_shared<ZeroDataParallel>(module, partition, reducer);
  std::erase_if(modules_, [](const auto& w) { return w.expired(); });
  modules_.push_back(wrapped);
  return wrapped;
}

std::shared_ptr<optim::Optimizer> DeepSpeedStrategy::setup_optimizer(
    std::shared_ptr<optim::Optimizer> opt) {
  if (ds_.stage == 3) return opt;  // built over the shards: it steps 1/W of the model as it is
  std::vector<std::shared_ptr<ZeroPartition>> partitions;
  for (const auto& weak : modules_)
    if (auto m = weak.lock()) partitions.push_back(m->partition_ptr());
  if (partitions.empty())
    throw RuntimeError(
        "deepspeed: no module is set up; call fabric.setup(model, optimizer) or "
        "fabric.setup_module(model) before fabric.setup_optimizers(optimizer)");
  auto zero = std::make_shared<ZeroOptimizer>(std::move(opt), std::move(partitions));
  std::erase_if(optimizers_, [](const auto& w) { return w.expired(); });
  optimizers_.push_back(zero);
  return zero;
}

void DeepSpeedStrategy::backward(const Tensor& loss) {
  if (ds_.stage == 3) return FSDPStrategy::backward(loss);
  // Presented partition gradients are moved aside before any backward adds to them (Note
  // [ZeRO partition], "Accumulation in stage 2").
  for (const auto& weak : modules_)
    if (auto m = weak.lock()) m->partition().before_backward();
  precision_->pre_backward(loss).backward();
  for (const auto& weak : modules_) {
    auto m = weak.lock();
    if (!m || !m->pending_backward) continue;
    m->pending_backward = false;
    if (m->reducer())
      m->reducer()->finalize();
    else
      m->partition().finalize();
  }
}

ScopeStack DeepSpeedStrategy::no_backward_sync(nn::Module& module) {
  if (ds_.stage == 3) return FSDPStrategy::no_backward_sync(module);
  auto* z = unwrap<ZeroDataParallel>(&module);
  if (!z)
    throw ValueError("no_backward_sync: the module was not set up with the deepspeed strategy");
  ScopeStack s;
  if (z->reducer())
    s.push<SyncOffGuard<Reducer>>(z->reducer());
  else
    s.push<SyncOffGuard<ZeroPartition>>(&z->partition());
  return s;
}

double DeepSpeedStrategy::reduce_norm_part(double part, bool inf_norm) {
  if (ds_.stage == 3) return FSDPStrategy::reduce_norm_part(part, inf_norm);
  if (ds_.stage == 1 || !process_group() || world_size() == 1) return part;
  Tensor t = scalar_tensor(part, DType::f64);
  process_group()->all_reduce(t, inf_norm ? ReduceOp::max : ReduceOp::sum);
  return t.item_double();
}

std::shared_ptr<ZeroOptimizer> DeepSpeedStrategy::zero_optimizer_of(
    const std::shared_ptr<optim::Optimizer>& opt) const {
  const optim::Optimizer* p = opt.get();
  while (const auto* f = dynamic_cast<const FabricOptimizer*>(p)) p = f->optimizer().get();
  for (const auto& weak : optimizers_)
    if (auto z = weak.lock(); z && (z.get() == p || z->optimizer().get() == p)) return z;
  return nullptr;
}

ShardedCheckpointContext DeepSpeedStrategy::sharded_context() const {
  return {.group = process_group().get(),
          .precision_state = precision_->state_dict(),
          .resolve_optimizer = [this](const std::shared_ptr<optim::Optimizer>& o)
              -> std::shared_ptr<optim::Optimizer> { return zero_optimizer_of(o); }};
}

void DeepSpeedStrategy::save_checkpoint(const std::string& path, const CheckpointState& state) {
  if (ds_.state_dict_type == "sharded")
    return save_sharded_checkpoint(path, state, sharded_context());
  if (ds_.stage == 3) {
    for (const auto& [key, value] : state)
      if (std::holds_alternative<std::shared_ptr<optim::Optimizer>>(value))
        throw ValueError("save: under deepspeed stage 3, saving optimizer state ('" + key +
                         "') is not yet available; save the model and plain values (stages 1 "
                         "and 2 save the full optimizer state)");
    return FSDPStrategy::save_checkpoint(path, state);
  }
  // Every rank gathers (in the state's key order, the same everywhere); rank 0 writes.
  CheckpointState full = state;
  for (auto& [key, value] : full)
    if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value))
      if (auto zero = zero_optimizer_of(*o))
        value = std::shared_ptr<optim::Optimizer>(
            std::make_shared<GatheredState>(zero->full_state_dict(), *zero->optimizer()));
  DDPStrategy::save_checkpoint(path, full);
}

CheckpointState DeepSpeedStrategy::load_checkpoint(const std::string& path, CheckpointState& state,
                                                   bool strict) {
  if (is_sharded_checkpoint_path(path)) {
    std::map<std::string, double> precision_state;
    CheckpointState rest =
        load_sharded_checkpoint(path, state, strict, sharded_context(), &precision_state);
    precision_->load_state_dict(precision_state);
    return rest;
  }
  // The user's own optimizer (re-pointed at the pieces) loads through its ZeroOptimizer, which
  // takes a full state; FabricOptimizers reach it by themselves.
  CheckpointState swapped = state;
  std::set<std::string> keys;
  for (auto& [key, value] : swapped)
    if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value))
      if (auto zero = zero_optimizer_of(*o); zero && zero->optimizer() == *o) {
        value = std::shared_ptr<optim::Optimizer>(zero);
        keys.insert(key);
      }
  CheckpointState rest = FSDPStrategy::load_checkpoint(path, swapped, strict);
  for (auto& [key, value] : state)
    if (!keys.count(key)) value = swapped.at(key);
  return rest;
}

std::shared_ptr<DeepSpeedStrategy> make_deepspeed_strategy(const std::string& name) {
  static const std::map<std::string, DeepSpeedOptions> known{
      {"deepspeed", {}},
      {"deepspeed_stage_1", {.stage = 1}},
      {"deepspeed_stage_2", {.stage = 2}},
      {"deepspeed_stage_2_offload", {.stage = 2, .offload_optimizer = true}},
      {"deepspeed_stage_3", {.stage = 3}},
      {"deepspeed_stage_3_offload", {.stage = 3, .offload_optimizer = true}},
  };
  auto it = known.find(name);
  if (it == known.end())
    throw ValueError("unknown strategy '" + name +
                     "'; the deepspeed strategies are deepspeed "
                     "(stage 2), deepspeed_stage_1, deepspeed_stage_2, deepspeed_stage_2_offload, "
                     "deepspeed_stage_3, deepspeed_stage_3_offload");
  return std::make_shared<DeepSpeedStrategy>(it->second);
}

}  // namespace loom
