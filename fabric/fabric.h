// Fabric: runs ordinary single-device training code on any device, in any precision, across
// processes, with a handful of calls (docs/design.md "Fabric").
//
//   Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2, .precision = "bf16-mixed"});
//   fabric.launch();
//   auto [model, opt] = fabric.setup(make_model(), make_optimizer());
//   auto loader = fabric.setup_dataloaders(train_loader);
//   for (auto& batch : *loader) { ...; fabric.backward(loss); opt->step(); opt->zero_grad(); }
//
// Construction only validates and resolves the options (the connector); launch() starts the
// processes and the process group; setup() wraps the model for the strategy.
#pragma once

#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "data/dataloader.h"
#include "dist/cluster_environment.h"
#include "fabric/accelerator.h"
#include "fabric/callback.h"
#include "fabric/checkpoint.h"
#include "fabric/compile.h"
#include "fabric/loggers/logger.h"
#include "fabric/precision.h"
#include "fabric/strategy.h"
#include "fabric/wrappers.h"
#include "optim/lr_scheduler.h"

namespace loom {

// A strategy by name ("ddp") or as an object.
struct StrategyArg {
  std::string name = "auto";
  std::shared_ptr<Strategy> object;
  StrategyArg() = default;
  StrategyArg(const char* n) : name(n) {}         // NOLINT: implicit by design
  StrategyArg(std::string n) : name(std::move(n)) {}  // NOLINT
  template <class S, class = std::enable_if_t<std::is_base_of_v<Strategy, S>>>
  StrategyArg(std::shared_ptr<S> s) : object(std::move(s)) {}  // NOLINT
};

// devices: a count (-1: all), a list of indices, or "auto" / "-1" / "0,1".
struct DevicesArg {
  std::variant<int, std::vector<int>, std::string> value = std::string("auto");
  DevicesArg() = default;
  DevicesArg(int n) : value(n) {}                                 // NOLINT
  DevicesArg(const char* s) : value(std::string(s)) {}            // NOLINT
  DevicesArg(std::string s) : value(std::move(s)) {}              // NOLINT
  DevicesArg(std::vector<int> list) : value(std::move(list)) {}   // NOLINT
  DevicesArg(std::initializer_list<int> l) : value(std::vector<int>(l)) {}  // NOLINT
};

// Strategy, precision, accelerator and cluster-environment objects given in `plugins`.
struct Plugin {
  std::shared_ptr<Strategy> strategy;
  std::shared_ptr<Precision> precision;
  std::shared_ptr<Accelerator> accelerator;
  std::shared_ptr<dist::ClusterEnvironment> environment;
  template <class T>
  Plugin(std::shared_ptr<T> p) {  // NOLINT: implicit by design
    if constexpr (std::is_base_of_v<Strategy, T>) strategy = p;
    else if constexpr (std::is_base_of_v<Precision, T>) precision = p;
    else if constexpr (std::is_base_of_v<Accelerator, T>) accelerator = p;
    else if constexpr (std::is_base_of_v<dist::ClusterEnvironment, T>) environment = p;
    else static_assert(sizeof(T) == 0, "a plugin is a Strategy, Precision, Accelerator or ClusterEnvironment");
  }
};

struct FabricOptions {
  std::string accelerator = "auto";
  StrategyArg strategy = "auto";
  DevicesArg devices = "auto";
  int num_nodes = 1;
  std::string precision = "32-true";
  std::vector<Plugin> plugins = {};
  std::vector<std::shared_ptr<Callback>> callbacks = {};
  std::vector<std::shared_ptr<Logger>> loggers = {};
  // ddp/fsdp/deepspeed launched by Fabric itself: when a rank fails, stop every rank and start
  // them again, at most this many times; the process that calls launch() then only supervises
  // (fabric/elastic_launch.h). Under loomrun, use loomrun --max-restarts instead.
  int max_restarts = 0;
};

struct SetupOptions {
  std::shared_ptr<optim::LRScheduler> scheduler = nullptr;  // validated against the optimizers
  bool move_to_device = true;
  bool reapply_compile = true;
};

struct DataLoaderSetupOptions {
  bool use_distributed_sampler = true;
  bool move_to_device = true;
};

struct ClipOptions {
  std::optional<double> max_norm = std::nullopt;  // clip by total norm ...
  std::optional<double> clip_val = std::nullopt;  // ... or clamp each gradient value to [-clip_val, clip_val]
  double norm_type = 2.0;
  bool error_if_nonfinite = true;
};

// A module type that wants its Fabric: derive from it next to nn::Module. setup() fills
// `fabric` and `fabric_optimizers` and adds the module to the callbacks.
class FabricAware : public Callback {
 public:
  class Fabric* fabric = nullptr;
  std::vector<std::shared_ptr<FabricOptimizer>> fabric_optimizers;
};

class Fabric {
 public:
  explicit Fabric(FabricOptions options = {});
  ~Fabric();
  Fabric(const Fabric&) = delete;
  Fabric& operator=(const Fabric&) = delete;

  // ---- processes ----
  // Starts the other processes when the strategy needs them, then sets the environment up.
  // ddp_spawn refuses it (ValueError): its forked ranks need the function of launch(fn).
  void launch();
  // launch() then fn(*this, args...) in every process; returns rank 0's result. With
  // ddp_spawn the other ranks are forked children whose failure makes this throw.
  template <class Fn, class... Args>
  auto launch(Fn&& fn, Args&&... args) {
    using R = std::invoke_result_t<Fn, Fabric&, Args...>;
    if constexpr (std::is_void_v<R>) {
      launch_with([&] { fn(*this, args...); });
    } else {
      std::optional<R> result;
      launch_with([&] { result.emplace(fn(*this, args...)); });
      return std::move(*result);
    }
  }
  bool launched() const { return launched_; }

  // ---- model set-up ----
  ScopeStack init_module(std::optional<bool> empty_init = std::nullopt);

  std::shared_ptr<FabricModule> setup(std::shared_ptr<nn::Module> module, SetupOptions options = {});
  // setup(module, optimizers..., [scheduler], [SetupOptions]) -> tuple(module, FabricOptimizer
  // for each optimizer..., [scheduler]).
  template <class... Rest>
    requires(sizeof...(Rest) > 0 && !(sizeof...(Rest) == 1 && (std::is_same_v<std::remove_cvref_t<Rest>, SetupOptions> && ...)))
  auto setup(std::shared_ptr<nn::Module> module, Rest&&... rest);

  std::shared_ptr<FabricModule> setup_module(std::shared_ptr<nn::Module> module,
                                             bool move_to_device = true);
  template <class... O>
  auto setup_optimizers(std::shared_ptr<O>... optimizers) {
    auto wrapped = std::make_tuple(setup_optimizer_checked(optimizers)...);
    if constexpr (sizeof...(O) == 1) return std::get<0>(wrapped);
    else return wrapped;
  }

  template <class... L>
  auto setup_dataloaders(std::shared_ptr<L>... loaders) {
    return setup_dataloaders(DataLoaderSetupOptions{}, std::move(loaders)...);
  }
  template <class... L>
  auto setup_dataloaders(DataLoaderSetupOptions opts, std::shared_ptr<L>... loaders) {
    static_assert(sizeof...(L) > 0, "setup_dataloaders needs at least one DataLoader");
    auto wrapped = std::make_tuple(setup_dataloader(loaders, opts)...);
    if constexpr (sizeof...(L) == 1) return std::get<0>(wrapped);
    else return wrapped;
  }
  int models_setup() const { return models_setup_; }

  // ---- training ----
  void backward(const Tensor& loss);
  // Unscales (f16), then clips; returns the total norm before clipping (max_norm) or an
  // undefined tensor (clip_val).
  Tensor clip_gradients(nn::Module& module, optim::Optimizer& optimizer, ClipOptions options);
  Tensor clip_gradients(nn::Module& module, optim::Optimizer& optimizer, double max_norm,
                        double norm_type = 2.0);
  // Inside, backward() does not synchronise gradients (gradient accumulation).
  ScopeStack no_backward_sync(nn::Module& module, bool enabled = true);
  // The precision's forward context (autocast) for code outside a FabricModule's forward.
  ScopeStack autocast();
  Tensor to_device(const Tensor& t) const;
  data::Batch to_device(const data::Batch& batch) const;
  // Seeds the default generator: rank 0 gets `seed`, other ranks a seed derived from it and
  // their rank. Returns this rank's seed.
  uint64_t seed_everything(uint64_t seed);

  // ---- collectives ----
  Tensor all_reduce(const Tensor& t, ReduceOp op = ReduceOp::avg);
  double all_reduce(double value, ReduceOp op = ReduceOp::avg);
  Tensor all_gather(const Tensor& t);
  Tensor broadcast(const Tensor& t, int src = 0);
  double broadcast(double value, int src = 0);
  void barrier(const std::string& name = "");

  // ---- checkpoints ----
  void save(const std::string& path, const CheckpointState& state);
  // Loads into the modules/optimizers/schedulers of `state` and fills its plain values;
  // returns what the file had beyond `state`.
  CheckpointState load(const std::string& path, CheckpointState& state, bool strict = true);

  // ---- callbacks and logging ----
  template <class... Args>
  void call(const std::string& hook, Args&&... args) {
    std::vector<std::any> packed{detail::pack_arg(std::forward<Args>(args))...};
    for (auto& cb : callbacks_)
      if (cb->has_hook(hook)) cb->invoke(hook, packed);
  }
  void log(const std::string& name, double value, int64_t step = 0);
  void log_dict(const std::map<std::string, double>& metrics, int64_t step = 0);
  const std::vector<std::shared_ptr<Callback>>& callbacks() const { return callbacks_; }
  const std::vector<std::shared_ptr<Logger>>& loggers() const { return loggers_; }
  std::shared_ptr<Logger> logger() const { return loggers_.empty() ? nullptr : loggers_[0]; }
  template <class... Args>
  void print(Args&&... args) const {
    if (is_global_zero()) ((std::cout << args), ...) << std::endl;
  }

  // ---- where this process stands ----
  int global_rank() const { return strategy_->global_rank(); }
  int local_rank() const { return strategy_->local_rank(); }
  int node_rank() const { return strategy_->node_rank(); }
  int world_size() const { return strategy_->world_size(); }
  bool is_global_zero() const { return strategy_->is_global_zero(); }
  Device device() const { return strategy_->root_device(); }
  Strategy& strategy() const { return *strategy_; }
  Accelerator& accelerator() const { return *accelerator_; }
  Precision& precision() const { return *precision_; }

 private:
  void launch_with(const std::function<void()>& fn);
  // Every rank takes rank zero's version for each run folder (Note [One run, one log folder]).
  void agree_on_run_folders();
  void check_launched(const char* what) const;
  std::shared_ptr<FabricModule> setup_module_impl(std::shared_ptr<nn::Module> module,
                                                  bool move_to_device, bool reapply_compile,
                                                  const std::vector<optim::Optimizer*>& optimizers,
                                                  const optim::LRScheduler* scheduler);
  std::shared_ptr<FabricOptimizer> setup_optimizer_checked(std::shared_ptr<optim::Optimizer> opt);
  // `pending`: a module being set up right now, whose parameters count as set up.
  // Mirrors in `optimizers` every parameter of `module` whose handle differs from the one at
  // the same position in `before` (a device move or a strategy replaced it).
  static void remap_replaced_parameters(const std::vector<Tensor>& before, const nn::Module& module,
                                        const std::vector<optim::Optimizer*>& optimizers);
  void check_optimizer_params(const optim::Optimizer& opt, const nn::Module* pending = nullptr) const;
  std::shared_ptr<FabricDataLoader> setup_dataloader(std::shared_ptr<data::DataLoader> loader,
                                                     const DataLoaderSetupOptions& opts);
  void after_setup(const std::shared_ptr<FabricModule>& module,
                   const std::vector<std::shared_ptr<FabricOptimizer>>& optimizers);

  std::shared_ptr<Accelerator> accelerator_;
  std::shared_ptr<Strategy> strategy_;
  std::shared_ptr<Precision> precision_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::vector<std::shared_ptr<Logger>> loggers_;
  std::vector<LogDir*> run_folders_;  // one per distinct version of the loggers' folders
  bool launched_ = false;
  int max_restarts_ = 0;  // FabricOptions::max_restarts
  std::shared_ptr<dist::ClusterEnvironment> environment_;  // a plugin's; null: detected
  int models_setup_ = 0;
  // Identities of the parameters of the modules set up so far (the foreign-optimizer check).
  // Weak: a Fabric must not keep every model it ever set up alive; an optimizer holds its
  // parameters, so an expired entry can never be one of them.
  std::vector<std::weak_ptr<TensorImpl>> setup_params_;
};

// ---- template definitions ----

namespace detail {
template <class T>
constexpr bool is_optimizer_v = std::is_base_of_v<optim::Optimizer, T>;
template <class T>
constexpr bool is_scheduler_v = std::is_base_of_v<optim::LRScheduler, T>;
template <class T>
struct shared_elem {};
template <class T>
struct shared_elem<std::shared_ptr<T>> {
  using type = T;
};
}  // namespace detail

template <class... Rest>
  requires(sizeof...(Rest) > 0 && !(sizeof...(Rest) == 1 && (std::is_same_v<std::remove_cvref_t<Rest>, SetupOptions> && ...)))
auto Fabric::setup(std::shared_ptr<nn::Module> module, Rest&&... rest) {
  SetupOptions options;
  std::vector<std::shared_ptr<optim::Optimizer>> optimizers;
  std::shared_ptr<optim::LRScheduler> scheduler;
  auto take = [&](auto&& arg) {
    using A = std::remove_cvref_t<decltype(arg)>;
    if constexpr (std::is_same_v<A, SetupOptions>) {
      options = arg;
    } else {
      using E = typename detail::shared_elem<A>::type;
      if constexpr (detail::is_optimizer_v<E>) optimizers.push_back(arg);
      else if constexpr (detail::is_scheduler_v<E>) scheduler = arg;
      else static_assert(sizeof(E) == 0, "setup(module, optimizers..., [scheduler], [SetupOptions])");
    }
  };
  (take(rest), ...);
  if (!scheduler) scheduler = options.scheduler;
  std::vector<optim::Optimizer*> raw;
  for (auto& o : optimizers) raw.push_back(o.get());
  auto fm = setup_module_impl(module, options.move_to_device, options.reapply_compile, raw,
                              scheduler.get());
  std::vector<std::shared_ptr<FabricOptimizer>> wrapped;
  for (auto& o : optimizers) wrapped.push_back(setup_optimizer_checked(o));
  after_setup(fm, wrapped);
  // Build the result: module, one FabricOptimizer per optimizer argument, the scheduler if
  // one was passed positionally.
  size_t next = 0;
  auto out = [&](auto&& arg) {
    using A = std::remove_cvref_t<decltype(arg)>;
    if constexpr (std::is_same_v<A, SetupOptions>) {
      return std::tuple<>();
    } else {
      using E = typename detail::shared_elem<A>::type;
      if constexpr (detail::is_optimizer_v<E>) return std::make_tuple(wrapped[next++]);
      else return std::make_tuple(arg);
    }
  };
  // A braced list evaluates left to right, so `next` follows the argument order.
  std::tuple<decltype(out(rest))...> parts{out(rest)...};
  return std::apply([&](auto&&... p) { return std::tuple_cat(std::make_tuple(fm), p...); }, parts);
}

}  // namespace loom
