#include "fabric/fabric.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "data/distributed_sampler.h"
#include "fabric/connector.h"
#include "fabric/elastic_launch.h"
#include "fabric/loggers/log_dir.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {

namespace {

// Note [One run, one log folder]: the loggers given to one Fabric are one run. Those that
// write to the same <root_dir>/<name> share one version_N (the version one of them was given,
// else the next free one, claimed once when the first of them needs it), so a CSV and a
// TensorBoard logger of a run land in one folder; a logger given another version keeps it.
// Returns one folder per distinct version, in the loggers' order: what the ranks agree on.
std::vector<LogDir*> link_run_folders(const std::vector<std::shared_ptr<Logger>>& loggers) {
  std::vector<LogDir*> dirs;
  for (const auto& l : loggers)
    if (LogDir* d = l ? l->versioned_dir() : nullptr) dirs.push_back(d);
  for (size_t i = 0; i < dirs.size(); ++i)
    for (size_t j = 0; j < i; ++j) {
      if (!dirs[i]->same_parent(*dirs[j])) continue;
      std::optional<int> a = dirs[i]->known_version(), b = dirs[j]->known_version();
      if (a && b && *a != *b) continue;  // two versions given on purpose
      dirs[i]->share_version_with(*dirs[j]);
      break;
    }
  std::vector<LogDir*> distinct;
  for (LogDir* d : dirs)
    if (std::none_of(distinct.begin(), distinct.end(),
                     [&](LogDir* e) { return e->shares_version_with(*d); }))
      distinct.push_back(d);
  return distinct;
}

}  // namespace

Fabric::Fabric(FabricOptions options) {
  ConnectorResult r = connect(options);
  accelerator_ = r.accelerator;
  strategy_ = r.strategy;
  precision_ = r.precision;
  max_restarts_ = options.max_restarts;
  environment_ = r.environment;
  callbacks_ = std::move(options.callbacks);
  loggers_ = std::move(options.loggers);
  for (const auto& cb : callbacks_)
    if (!cb) throw ValueError("callbacks: a callback is null");
  for (const auto& l : loggers_)
    if (!l) throw ValueError("loggers: a logger is null");
  run_folders_ = link_run_folders(loggers_);
}

void Fabric::agree_on_run_folders() {
  // Rank zero claims each folder now (it is the rank that logs) and the others take its
  // versions, so that every rank's log_dir() names the same folder and none claims its own.
  if (world_size() == 1 || run_folders_.empty()) return;
  std::vector<double> versions(run_folders_.size(), 0.0);
  if (is_global_zero())
    for (size_t i = 0; i < run_folders_.size(); ++i) versions[i] = run_folders_[i]->version();
  Tensor local = from_vector(versions, std::nullopt, DType::f64).to(device());
  versions = strategy_->broadcast(local, 0).to(Device::cpu()).to_vector<double>();
  if (!is_global_zero())
    for (size_t i = 0; i < run_folders_.size(); ++i) run_folders_[i]->pin_version(int(versions[i]));
}

Fabric::~Fabric() = default;

void Fabric::launch() {
  // The forked ranks of ddp_spawn run only launch's function and end with it: without one,
  // the code after launch() would run on rank 0 alone and fail in its first collective.
  if (strategy_->launch_needs_function())
    throw ValueError(detail::concat(
        "launch: the '", strategy_->name(), "' strategy runs the other ranks in forked processes "
        "that execute only the function given to launch; call fabric.launch(fn) (fn(Fabric&, "
        "args...) holding the training code), or use strategy 'ddp', which starts every rank "
        "from the top of the program and works with launch()"));
  launch_with([] {});
}

void Fabric::launch_with(const std::function<void()>& fn) {
  if (launched_)
    throw RuntimeError("launch: this Fabric was already launched; call launch() once");
  // With max_restarts this process may only supervise the ranks: then it never returns.
  supervise_elastic_launch(max_restarts_, *strategy_, environment_);
  strategy_->launch([&] {
    strategy_->setup_environment();
    agree_on_run_folders();
    launched_ = true;
    fn();
  });
}

void Fabric::check_launched(const char* what) const {
  if (!launched_ && !strategy_->works_without_launch())
    throw RuntimeError(std::string(what) + ": the '" + strategy_->name() +
                       "' strategy runs in several processes; call fabric.launch() first");
}

ScopeStack Fabric::init_module(std::optional<bool> empty_init) {
  check_launched("init_module");
  return strategy_->module_init_context(empty_init);
}

std::shared_ptr<FabricModule> Fabric::setup(std::shared_ptr<nn::Module> module, SetupOptions options) {
  auto fm = setup_module_impl(std::move(module), options.move_to_device, options.reapply_compile,
                              {}, options.scheduler.get());
  after_setup(fm, {});
  return fm;
}

std::shared_ptr<FabricModule> Fabric::setup_module(std::shared_ptr<nn::Module> module,
                                                   bool move_to_device) {
  auto fm = setup_module_impl(std::move(module), move_to_device, true, {}, nullptr);
  after_setup(fm, {});
  return fm;
}

std::shared_ptr<FabricModule> Fabric::setup_module_impl(
    std::shared_ptr<nn::Module> module, bool move_to_device, bool reapply_compile,
    const std::vector<optim::Optimizer*>& optimizers, const optim::LRScheduler* scheduler) {
  // 1. Validate.
  check_launched("setup");
  if (!module) throw ValueError("setup: the module is null");
  if (dynamic_cast<FabricModule*>(module.get()))
    throw ValueError("setup: the module is already a FabricModule (set up once); pass the "
                     "original module, or use the FabricModule as it is");
  for (optim::Optimizer* o : optimizers)
    if (dynamic_cast<FabricOptimizer*>(o))
      throw ValueError("setup: an optimizer is already a FabricOptimizer (set up once); pass "
                       "the original optimizer");
  // Refuse foreign optimizers and schedulers before anything is converted, moved or counted.
  if (!optimizers.empty() && strategy_->optimizer_needs_setup_module_first())
    throw RuntimeError(detail::concat(
        "setup: the '", strategy_->name(), "' strategy replaces the module's parameters with "
        "shards, so an optimizer built before setup would update tensors that no longer train. "
        "Call fabric.setup_module(model) first, build the optimizer from the returned module's "
        "parameters(), then call fabric.setup_optimizers(optimizer)"));
  for (optim::Optimizer* o : optimizers) check_optimizer_params(*o, module.get());
  if (scheduler) {
    bool drives = false;
    for (optim::Optimizer* o : optimizers) drives = drives || scheduler->optimizer().get() == o;
    if (!drives)
      throw ValueError("setup: the scheduler does not drive any of the optimizers passed to "
                       "setup(); build it on one of them and pass that optimizer too");
  }
  // 2. Unwrap a compiled module, keeping its options.
  std::shared_ptr<nn::Module> given = module;
  std::optional<CompileOptions> compile_options;
  if (auto* c = dynamic_cast<CompiledModule*>(module.get())) {
    compile_options = c->options();
    module = c->inner();
  }
  // 3. Precision, 4. device, 5. strategy wrap. Each parameter's handle is remembered, so that
  // a step that replaced parameter objects is mirrored in the optimizers.
  std::vector<Tensor> before = module->parameters();
  precision_->convert_module(*module);
  if (move_to_device) strategy_->module_to_device(*module);
  std::shared_ptr<nn::Module> forward = strategy_->setup_module(module);
  remap_replaced_parameters(before, *module, optimizers);
  // 6. Compile again.
  if (compile_options && reapply_compile) forward = compile(forward, *compile_options);
  // 7. The FabricModule, and the identities the optimizer check accepts.
  auto fm = std::make_shared<FabricModule>(forward, given, strategy_.get());
  std::erase_if(setup_params_, [](const std::weak_ptr<TensorImpl>& w) { return w.expired(); });
  for (const Tensor& p : fm->parameters()) setup_params_.push_back(p.impl_ptr());  // shards under fsdp
  ++models_setup_;
  return fm;
}

void Fabric::remap_replaced_parameters(const std::vector<Tensor>& before, const nn::Module& module,
                                       const std::vector<optim::Optimizer*>& optimizers) {
  if (optimizers.empty()) return;
  // Parameters keep their positions in the walk when a handle is replaced under its name
  // (replace_parameter, set_data), so the i-th parameter before is the i-th after. A strategy
  // that changes how many parameters there are (flat shards) needs optimizers built after
  // setup_module, which setup() enforces (optimizer_needs_setup_module_first).
  std::vector<Tensor> after = module.parameters();
  if (after.size() != before.size()) return;
  std::unordered_map<TensorImpl*, Tensor> replaced;
  for (size_t i = 0; i < after.size(); ++i)
    if (!before[i].is_same(after[i])) replaced.emplace(before[i].impl(), after[i]);
  if (!replaced.empty())
    for (optim::Optimizer* o : optimizers) o->replace_parameters(replaced);
}

void Fabric::check_optimizer_params(const optim::Optimizer& opt, const nn::Module* pending) const {
  // A sorted vector of identities: setup() runs this for every model, and a hash set of a
  // few hundred parameters costs more than the rest of setup together.
  std::vector<const TensorImpl*> known;
  known.reserve(setup_params_.size());
  for (const auto& w : setup_params_)
    if (auto p = w.lock()) known.push_back(p.get());
  if (pending)
    for (const Tensor& p : pending->parameters()) known.push_back(p.impl());
  std::sort(known.begin(), known.end());
  int64_t foreign = 0, total = 0, meta = 0;
  for (const auto& group : opt.param_groups())
    for (const Tensor& p : group.params) {
      ++total;
      if (!std::binary_search(known.begin(), known.end(), p.impl())) ++foreign;
      if (p.is_meta()) ++meta;
    }
  if (meta > 0)
    throw RuntimeError(detail::concat(
        "setup: ", meta, " of the optimizer's ", total, " parameters are on the meta device "
        "and hold no values, so the optimizer could never step them. Call "
        "fabric.setup_module(model) first, build the optimizer from the returned module's "
        "parameters(), then call fabric.setup_optimizers(optimizer)"));
  if (foreign > 0)
    throw ValueError(detail::concat(
        "setup: ", foreign, " of the optimizer's ", total,
        " parameters do not belong to any module set up by this Fabric, so they would never "
        "be trained. Build the optimizer from the parameters of the module you pass to "
        "setup() (or call setup_module() first and build the optimizer from the returned "
        "module's parameters, then setup_optimizers())"));
}

std::shared_ptr<FabricOptimizer> Fabric::setup_optimizer_checked(std::shared_ptr<optim::Optimizer> opt) {
  check_launched("setup_optimizers");
  if (!opt) throw ValueError("setup_optimizers: the optimizer is null");
  if (dynamic_cast<FabricOptimizer*>(opt.get()))
    throw ValueError("setup_optimizers: the optimizer is already a FabricOptimizer (set up once)");
  check_optimizer_params(*opt);
  std::shared_ptr<optim::Optimizer> stepped = strategy_->setup_optimizer(opt);
  if (!stepped) throw RuntimeError("setup_optimizers: the strategy returned no optimizer");
  return std::make_shared<FabricOptimizer>(std::move(stepped), strategy_.get());
}

void Fabric::after_setup(const std::shared_ptr<FabricModule>& module,
                         const std::vector<std::shared_ptr<FabricOptimizer>>& optimizers) {
  // A compiled module is Fabric-aware when the module inside it is.
  std::shared_ptr<nn::Module> original = module->original_module();
  if (auto* c = dynamic_cast<CompiledModule*>(original.get())) original = c->inner();
  if (auto aware = std::dynamic_pointer_cast<FabricAware>(original)) {
    aware->fabric = this;
    aware->fabric_optimizers = optimizers;
    bool present = false;
    for (const auto& cb : callbacks_) present = present || cb.get() == aware.get();
    if (!present) callbacks_.push_back(aware);
  }
  call("on_after_setup", *this, *module);
}

std::shared_ptr<FabricDataLoader> Fabric::setup_dataloader(std::shared_ptr<data::DataLoader> loader,
                                                           const DataLoaderSetupOptions& opts) {
  if (!loader) throw ValueError("setup_dataloaders: a DataLoader is null");
  if (opts.use_distributed_sampler && world_size() > 1 &&
      !std::dynamic_pointer_cast<data::DistributedSampler>(loader->sampler())) {
    const auto& o = loader->options();
    bool shuffle = o.shuffle || std::dynamic_pointer_cast<data::RandomSampler>(o.sampler) != nullptr;
    auto sampler = std::make_shared<data::DistributedSampler>(
        loader->dataset()->size(), world_size(), global_rank(), shuffle, o.seed, o.drop_last);
    loader = loader->rebuild(sampler);
  }
  return std::make_shared<FabricDataLoader>(loader, device(), opts.move_to_device);
}

void Fabric::backward(const Tensor& loss) {
  if (!loss.defined()) throw ValueError("backward: the loss is undefined");
  strategy_->backward(loss);
}

Tensor Fabric::clip_gradients(nn::Module& module, optim::Optimizer& optimizer, ClipOptions o) {
  if (o.max_norm.has_value() == o.clip_val.has_value())
    throw ValueError("clip_gradients: pass exactly one of max_norm and clip_val");
  auto* fo = dynamic_cast<FabricOptimizer*>(&optimizer);
  optim::Optimizer& inner = fo ? *fo->optimizer() : optimizer;
  precision_->unscale_gradients(inner);  // clip the true gradients, not the scaled ones
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  for (const Tensor& p : module.parameters())
    if (p.grad().defined()) grads.push_back(p.grad());
  if (o.clip_val) {
    for (Tensor& g : grads) native::copy_(g, native::clamp(g, -*o.clip_val, *o.clip_val));
    return Tensor();
  }
  // total = (sum_i ||g_i||_p^p)^(1/p); inf-norm: max |g|.
  double total = 0.0;
  bool inf_norm = std::isinf(o.norm_type);
  for (const Tensor& g : grads) {
    Tensor a = native::to(native::unary(native::UnaryOp::abs, g), g.device(), DType::f64);
    if (inf_norm) {
      total = std::max(total, native::amax(a, {}, false).item_double());
    } else {
      Tensor pw = native::binary(native::BinaryOp::pow, a, native::wrap_scalar(o.norm_type, a));
      total += native::sum(pw, {}, false).item_double();
    }
  }
  total = strategy_->reduce_norm_part(total, inf_norm);  // the whole model's, across shards
  if (!inf_norm) total = std::pow(total, 1.0 / o.norm_type);
  if (o.error_if_nonfinite && !std::isfinite(total))
    throw RuntimeError(detail::concat("clip_gradients: the total norm of the gradients is ", total,
                                      "; a loss or gradient is inf/nan. Pass error_if_nonfinite=false "
                                      "to clip anyway"));
  double coef = *o.max_norm / (total + 1e-6);
  if (coef < 1.0)
    for (Tensor& g : grads) native::binary_(native::BinaryOp::mul, g, native::wrap_scalar(coef, g));
  return scalar_tensor(total, DType::f32);
}

Tensor Fabric::clip_gradients(nn::Module& module, optim::Optimizer& optimizer, double max_norm,
                              double norm_type) {
  return clip_gradients(module, optimizer, ClipOptions{.max_norm = max_norm, .norm_type = norm_type});
}

ScopeStack Fabric::no_backward_sync(nn::Module& module, bool enabled) {
  // Checked even when disabled, so a wrong module shows up on every process count.
  if (!dynamic_cast<FabricModule*>(&module))
    throw ValueError("no_backward_sync: pass the module returned by setup() (a FabricModule)");
  if (!enabled) return {};
  return strategy_->no_backward_sync(module);
}

ScopeStack Fabric::autocast() { return precision_->forward_context(); }

Tensor Fabric::to_device(const Tensor& t) const { return t.to(device()); }

data::Batch Fabric::to_device(const data::Batch& batch) const {
  data::Batch out;
  for (const Tensor& t : batch) out.push_back(to_device(t));
  return out;
}

uint64_t Fabric::seed_everything(uint64_t seed) {
  uint64_t s = seed;
  if (int r = global_rank(); r != 0) s = seed ^ (0x9E3779B97F4A7C15ull * uint64_t(r));
  manual_seed(s);
  return s;
}

Tensor Fabric::all_reduce(const Tensor& t, ReduceOp op) { return strategy_->all_reduce(t, op); }
double Fabric::all_reduce(double value, ReduceOp op) {
  return strategy_->all_reduce(scalar_tensor(value, DType::f64), op).item_double();
}
Tensor Fabric::all_gather(const Tensor& t) { return strategy_->all_gather(t); }
Tensor Fabric::broadcast(const Tensor& t, int src) { return strategy_->broadcast(t, src); }
double Fabric::broadcast(double value, int src) {
  return strategy_->broadcast(scalar_tensor(value, DType::f64), src).item_double();
}
void Fabric::barrier(const std::string& name) { strategy_->barrier(name); }

void Fabric::log(const std::string& name, double value, int64_t step) { log_dict({{name, value}}, step); }

void Fabric::log_dict(const std::map<std::string, double>& metrics, int64_t step) {
  if (!is_global_zero()) return;
  for (auto& l : loggers_) l->log_metrics(metrics, step);
}

void Fabric::save(const std::string& path, const CheckpointState& state) {
  strategy_->save_checkpoint(path, state);
}

CheckpointState Fabric::load(const std::string& path, CheckpointState& state, bool strict) {
  return strategy_->load_checkpoint(path, state, strict);
}

}  // namespace loom
