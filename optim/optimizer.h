// Optimizer: the base of loom's optimizers -- parameter groups, per-parameter state, step(),
// zero_grad(), state_dict()/load_state_dict() and the old -> new parameter remap Fabric needs.
//
// It is PyTorch's torch.optim.Optimizer in C++: a list of groups, each holding parameters
// and its own hyper-parameters, and a state per parameter. It deliberately is not a closure
// runner (no step(closure), no LBFGS) and keeps no gradient scaler (precision plugins do that).
//
// Note [Hyper-parameters as a map]: each group keeps its hyper-parameters in a
// `std::map<std::string, double>` (HyperParams), as PyTorch's param_group dicts do. We
// considered a typed struct per optimizer, but then schedulers could not set "lr" without
// knowing the optimizer type, and state_dict() would need one serialiser per optimizer. The
// map keeps those generic; inside step() each optimizer reads the map once per group into its
// typed Options struct (SGDOptions, AdamOptions), so the math reads named fields and a typo
// in a key is caught when the group is added. Flags (nesterov, amsgrad) are stored as 0 / 1.
//
// Note [Parameter identity]: state is keyed by the parameter's TensorImpl*, which is its
// identity (nn::Module::to() keeps it). The groups hold the Tensor handles, so a key never
// dangles while it is in a group. state_dict() numbers parameters 0..N-1 in group order,
// as PyTorch does, so a checkpoint does not depend on addresses.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace loom::optim {

using HyperParams = std::map<std::string, double>;

// Parameters and the hyper-parameters that differ from the optimizer's defaults. When the
// group is added, keys not given are filled from the defaults; unknown keys are an error.
struct ParamGroup {
  std::vector<Tensor> params;
  HyperParams options;

  ParamGroup() = default;
  ParamGroup(std::vector<Tensor> p, HyperParams o = {})  // NOLINT: implicit, as in PyTorch
      : params(std::move(p)), options(std::move(o)) {}

  double lr() const { return get("lr"); }
  void set_lr(double lr) { options["lr"] = lr; }
  // The value of a hyper-parameter; throws ValueError naming the key when absent.
  double get(const std::string& key) const;
};

// One group of all `params` with the defaults; no group at all when `params` is empty (so the
// optimizer reports an empty parameter list rather than an empty group).
std::vector<ParamGroup> as_groups(std::vector<Tensor> params);

// What an optimizer remembers about one parameter between steps.
struct ParamState {
  int64_t step = 0;                       // number of updates applied to this parameter
  std::map<std::string, Tensor> buffers;  // e.g. "momentum_buffer", "exp_avg"; param's shape
};

// A checkpointable copy of an optimizer's state: tensors and numbers only, no identities.
// Mirrors PyTorch's {"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}.
struct OptimizerStateDict {
  struct Group {
    HyperParams options;          // every hyper-parameter of the group
    std::vector<int64_t> params;  // global parameter indices, in group order
  };
  std::map<int64_t, ParamState> state;  // only parameters that have state; tensors are copies
  std::vector<Group> param_groups;
};

// The state buffers an optimizer's step() keeps per parameter, for checking loaded state.
struct StateBuffers {
  bool known = false;                 // false: nothing is declared, any buffers are accepted
  std::vector<std::string> required;  // step() reads these once a parameter has state
  std::vector<std::string> optional;  // accepted, not needed
};

// Note [Wrapping optimizers]: the public operations are virtual so that a wrapper (Fabric's
// FabricOptimizer) can forward them to the optimizer it wraps. The helpers that are not
// virtual (lr, set_lr, num_params) go through param_groups(), so they see the wrapped groups.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient (undefined grads are skipped), run
  // under NoGradGuard.
  virtual void step();
  // set_to_none drops the gradients (the next backward allocates fresh ones); otherwise
  // they are filled with zeros in place.
  virtual void zero_grad(bool set_to_none = true);

  // Adds a group; its missing hyper-parameters come from the defaults. A parameter may
  // belong to one group only.
  virtual void add_param_group(ParamGroup group);
  virtual std::vector<ParamGroup>& param_groups() { return groups_; }
  virtual const std::vector<ParamGroup>& param_groups() const { return groups_; }
  const HyperParams& defaults() const { return defaults_; }
  int64_t num_params() const;
  const std::string& name() const { return name_; }

  double lr(size_t group = 0) const;
  void set_lr(double lr);                // every group
  void set_lr(size_t group, double lr);  // one group

  // The state of one parameter, or nullptr before its first step.
  virtual const ParamState* state(const Tensor& param) const;

  virtual OptimizerStateDict state_dict() const;
  // Runs check_state_dict(dict) before changing anything, then copies the buffers onto each
  // parameter's device and dtype. A dict that passes the check loads without throwing.
  virtual void load_state_dict(const OptimizerStateDict& dict);
  // Throws ValueError for a dict that load_state_dict() would refuse, changing nothing: group
  // count and sizes, unknown hyper-parameters and invalid values (check_options), parameter
  // indices listed twice or state for an index no group lists, a step outside
  // [0, 2^63 - 1), and per parameter with state: the buffers state_buffers() requires, no
  // buffer it does not know, each of the parameter's shape -- and with exact_dtypes, of its
  // dtype (load_state_dict() itself converts). Checkpoint loading calls it to validate every
  // entry before it applies any.
  virtual void check_state_dict(const OptimizerStateDict& dict, bool exact_dtypes = false) const;
  // What step() keeps per parameter under `options` (a group's complete hyper-parameters).
  // The base knows loom's optimizers by name(): SGD keeps "momentum_buffer" (required when
  // momentum != 0), Adam and AdamW "exp_avg" and "exp_avg_sq" (and "max_exp_avg_sq",
  // required with amsgrad). Other optimizers declare nothing unless they override it.
  virtual StateBuffers state_buffers(const HyperParams& options) const;

  // Points groups at new parameters (Note [Parameter identity]) and moves their state;
  // parameters not in the map are kept. Returns how many parameters were replaced. Used when
  // a strategy replaces parameters (sharding, flattening) after the optimizer was built.
  virtual int64_t replace_parameters(const std::unordered_map<TensorImpl*, Tensor>& old_to_new);

  // Whether contiguous CPU parameters are updated by one fused loop over raw data (the
  // default) instead of a sequence of tensor ops. Both give the same math; tests compare them.
  void set_fused(bool fused) { fused_ = fused; }
  bool fused() const { return fused_; }

 protected:
  // Derived constructors check the defaults, then call add_groups() from their body (a base
  // constructor cannot call the derived check_options()).
  Optimizer(std::string name, HyperParams defaults);
  // Adds the constructor's groups; an empty list (or a group without parameters) is an error.
  void add_groups(std::vector<ParamGroup> groups);

  // Checks a complete group's hyper-parameters (ranges, combinations); throws ValueError.
  virtual void check_options(const HyperParams& options) const = 0;
  // Updates every parameter of one group that has a gradient. Runs under NoGradGuard.
  virtual void step_group(ParamGroup& group) = 0;

  ParamState& state_for(const Tensor& param) { return state_[param.impl()]; }
  // True when p and its grad can take the fused raw-pointer loop: same floating dtype,
  // both on the CPU and contiguous.
  bool use_fused(const Tensor& p, const Tensor& grad) const;

 private:
  void check_param(const Tensor& p, const char* where) const;
  // check_state_dict()'s work, keeping what load_state_dict() applies: each group's new
  // options, and each parameter with state paired with its saved state (pointers into dict).
  struct ResolvedState {
    std::vector<HyperParams> options;
    std::vector<std::pair<const Tensor*, const ParamState*>> state;
  };
  ResolvedState resolve_state_dict(const OptimizerStateDict& dict, bool exact_dtypes) const;

  std::string name_;
  HyperParams defaults_;
  std::vector<ParamGroup> groups_;
  std::unordered_map<TensorImpl*, ParamState> state_;
  bool fused_ = true;
};

}  // namespace loom::optim
