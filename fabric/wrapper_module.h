// WrapperModule: the one base of the modules that run another module and present it as
// themselves (CompiledModule, DataParallel, DistributedDataParallel, FabricModule, and the
// sharding strategies' wrappers).
//
// A wrapper's forward runs inner(). Names, parameters, buffers and state are inner()'s,
// without a prefix, so checkpoints and optimizers see the user's module however many
// wrappers stand around it; a wrapper that changes what it presents (FSDP presents its flat
// shards) overrides those methods. unwrap<M>() walks the chain of inner() to find a wrapper
// of a given kind, instead of a chain of casts per known wrapper.
#pragma once

#include <memory>
#include <string>

#include "nn/module.h"

namespace loom {

class WrapperModule : public nn::Module {
 public:
  // `what` names the wrapper in the error for a null module ("compile", "DataParallel").
  WrapperModule(std::shared_ptr<nn::Module> inner, const char* what);

  Tensor forward(const Tensor& x) override { return (*inner_)(x); }
  const std::shared_ptr<nn::Module>& inner() const { return inner_; }

  void walk_parameters(ParameterWalk& walk, bool recurse) const override {
    inner_->walk_parameters(walk, recurse);
  }
  nn::OrderedDict<Tensor> named_buffers(bool recurse = true) const override {
    return inner_->named_buffers(recurse);
  }
  nn::OrderedDict<std::shared_ptr<nn::Module>> named_modules(const std::string& prefix = "") override {
    return inner_->named_modules(prefix);
  }
  void walk_modules(std::vector<nn::Module*>& out) override { inner_->walk_modules(out); }
  nn::StateDict state_dict() const override { return inner_->state_dict(); }
  nn::LoadStateDictResult load_state_dict(const nn::StateDict& s, bool strict = true) override {
    return inner_->load_state_dict(s, strict);
  }
  nn::Module& train(bool on = true) override {
    inner_->train(on);
    return nn::Module::train(on);
  }

 protected:
  std::shared_ptr<nn::Module> inner_;
};

// The first module of type M on the chain module -> inner() -> inner() ..., or nullptr.
template <class M>
M* unwrap(nn::Module* module) {
  while (module) {
    if (auto* m = dynamic_cast<M*>(module)) return m;
    auto* w = dynamic_cast<WrapperModule*>(module);
    module = w ? w->inner().get() : nullptr;
  }
  return nullptr;
}

}  // namespace loom
