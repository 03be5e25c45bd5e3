// loom::compile: wraps a module with the options a compiler would use.
//
// For now the wrapper runs the module eagerly; what matters is the contract Fabric relies
// on: setup() recognises a CompiledModule, applies its strategy to the inner module and, with
// reapply_compile, compiles the strategy-wrapped module again with the saved options. Names
// (parameters, state_dict keys) are the inner module's, without prefix.
#pragma once

#include <memory>
#include <string>

#include "nn/module.h"

namespace loom {

struct CompileOptions {
  std::string mode = "default";
  bool fullgraph = false;
  bool dynamic = false;
};

class CompiledModule : public nn::Module {
 public:
  CompiledModule(std::shared_ptr<nn::Module> inner, CompileOptions options);
  Tensor forward(const Tensor& x) override { return (*inner_)(x); }
  std::string name() const override { return "Compiled(" + inner_->name() + ")"; }

  const std::shared_ptr<nn::Module>& inner() const { return inner_; }
  const CompileOptions& options() const { return options_; }

  nn::OrderedDict<Tensor> named_parameters(bool recurse = true) const override {
    return inner_->named_parameters(recurse);
  }
  nn::OrderedDict<Tensor> named_buffers(bool recurse = true) const override {
    return inner_->named_buffers(recurse);
  }
  nn::OrderedDict<std::shared_ptr<nn::Module>> named_modules(const std::string& prefix = "") override {
    return inner_->named_modules(prefix);
  }
  nn::StateDict state_dict() const override { return inner_->state_dict(); }
  nn::LoadStateDictResult load_state_dict(const nn::StateDict& s, bool strict = true) override {
    return inner_->load_state_dict(s, strict);
  }
  nn::Module& train(bool on = true) override {
    inner_->train(on);
    return nn::Module::train(on);
  }

 private:
  std::shared_ptr<nn::Module> inner_;
  CompileOptions options_;
};

std::shared_ptr<CompiledModule> compile(std::shared_ptr<nn::Module> module, CompileOptions options = {});

}  // namespace loom
