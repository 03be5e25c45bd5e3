// nn::Module: the base of every layer and model.
//
// A module owns named parameters, buffers and child modules, each kept in registration
// order, so named_parameters() yields stable dotted names ("blocks.0.attn.qkv.weight") that
// optimizers, FSDP and checkpoints key on. Modules live in std::shared_ptr.
//
// Note [Parameter identity]: to(), to_empty() and materialize() replace a parameter's
// storage inside its TensorImpl, so every handle to the parameter (an optimizer's, a user's)
// sees the moved data: optimizers built before a move stay valid. Code that cannot keep
// identity (sharding, flattening) must remap optimizers itself.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nn/ordered_dict.h"
#include "tensor/tensor.h"

namespace loom::nn {

// A Tensor registered as a trainable parameter: a leaf that requires grad.
class Parameter : public Tensor {
 public:
  explicit Parameter(const Tensor& t, bool requires_grad = true);
};

using StateDict = OrderedDict<Tensor>;

struct LoadStateDictResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

class Module : public std::enable_shared_from_this<Module> {
 public:
  // Runs before forward; may return a replacement input.
  using ForwardPreHook = std::function<std::optional<Tensor>(Module&, const Tensor& input)>;
  // Runs after forward; may return a replacement output.
  using ForwardHook =
      std::function<std::optional<Tensor>(Module&, const Tensor& input, const Tensor& output)>;

  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The computation; one tensor in, one out. Modules with other signatures add methods.
  virtual Tensor forward(const Tensor& input);
  // Runs pre-hooks, forward, post-hooks: call modules through this, not forward().
  Tensor operator()(const Tensor& input);
  // The class name shown in errors and printing ("Linear").
  virtual std::string name() const;

  // ---- registration ----
  // Registers `t` as a parameter and returns the registered leaf (t itself when it is a
  // leaf; a detached copy of a non-leaf).
  Tensor register_parameter(const std::string& name, const Tensor& t, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, const Tensor& t, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }
  // Replaces a registered parameter handle (sharding strategies that cannot keep identity).
  void replace_parameter(const std::string& name, const Tensor& t);

  // ---- traversal (recursive unless told; dotted names) ----
  // Parameters: this module's, then its children's depth-first, a shared parameter once under
  // its first name. Both walk walk_parameters(), which wrappers override to present another
  // module's tree unprefixed (FabricModule).
  std::vector<Tensor> parameters(bool recurse = true) const;
  OrderedDict<Tensor> named_parameters(bool recurse = true) const;
  // The parameter walk behind parameters() and named_parameters(): appends every parameter
  // in tree order, shared ones as often as they are registered, to `list` and, when `named`
  // is given, to `names` under `prefix` + its dotted name (prefix is restored on return). The
  // callers then keep each shared parameter's first occurrence. One walk with one prefix
  // buffer and no per-parameter set keeps it cheap: setup() walks every model several times.
  struct ParameterWalk {
    std::string prefix;
    std::vector<Tensor> list;
    std::vector<std::string> names;
    bool named = false;
  };
  virtual void walk_parameters(ParameterWalk& walk, bool recurse) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  virtual OrderedDict<Tensor> named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  OrderedDict<std::shared_ptr<Module>> named_children() const;
  // This module first (name ""), then every descendant depth-first.
  virtual OrderedDict<std::shared_ptr<Module>> named_modules(const std::string& prefix = "");
  // The same modules, in the same order, without names: the walk behind to(), to_empty(),
  // materialize() and zero_grad(). A wrapper that presents another module's tree overrides it
  // along with walk_parameters() and named_modules().
  virtual void walk_modules(std::vector<Module*>& out);
  std::vector<std::shared_ptr<Module>> modules();
  int64_t num_parameters(bool trainable_only = false) const;
  int64_t parameter_bytes() const;

  // ---- state ----
  virtual StateDict state_dict() const;  // parameters and persistent buffers, dotted names
  // Copies values in place. strict: missing or unexpected keys throw ValueError listing them;
  // a shape mismatch always throws, naming the key and both shapes.
  virtual LoadStateDictResult load_state_dict(const StateDict& state, bool strict = true);

  // ---- modes, moves, init ----
  virtual Module& train(bool on = true);
  Module& eval() { return train(false); }
  bool is_training() const { return training_; }
  Module& apply(const std::function<void(Module&)>& fn);  // children first, then this
  Module& to(Device device);
  Module& to(DType dtype);  // floating parameters and buffers only
  Module& to(Device device, DType dtype);
  // Fresh, uninitialised storage on `device` for every parameter and buffer.
  Module& to_empty(Device device);
  // to_empty(device) then reset_parameters() on every module.
  Module& materialize(Device device);
  void zero_grad(bool set_to_none = true);
  // (Re)initialises this module's own parameters through nn::init; default does nothing.
  virtual void reset_parameters() {}

  int register_forward_pre_hook(ForwardPreHook hook);
  int register_forward_hook(ForwardHook hook);
  void remove_hook(int handle);

 protected:
  void add_child(const std::string& name, std::shared_ptr<Module> module);

 private:
  void check_name(const std::string& name, const char* what) const;
  // fn(param_or_buffer) -> replacement data, applied keeping identity.
  void transform_tensors(const std::function<Tensor(const Tensor&)>& fn);

  OrderedDict<Tensor> parameters_;
  OrderedDict<Tensor> buffers_;
  std::vector<std::string> non_persistent_;
  OrderedDict<std::shared_ptr<Module>> children_;
  std::vector<std::pair<int, ForwardPreHook>> pre_hooks_;
  std::vector<std::pair<int, ForwardHook>> post_hooks_;
  bool training_ = true;
};

// Replaces t's data (storage, shape, dtype) with `data`'s in place, keeping the handle
// (Note [Parameter identity]); a gradient of the old shape is dropped.
void set_data(const Tensor& t, const Tensor& data);

}  // namespace loom::nn
