// loom::compile: wraps a module with the options a compiler would use.
//
// For now the wrapper runs the module eagerly; what matters is the contract Fabric relies
// on: setup() recognises a CompiledModule, applies its strategy to the inner module and, with
// reapply_compile, compiles the strategy-wrapped module again with the saved options. Names
// (parameters, state_dict keys) are the inner module's, without prefix.
#pragma once

#include <memory>
#include <string>

#include "fabric/wrapper_module.h"

namespace loom {

struct CompileOptions {
  std::string mode = "default";
  bool fullgraph = false;
  bool dynamic = false;
};

class CompiledModule : public WrapperModule {
 public:
  CompiledModule(std::shared_ptr<nn::Module> inner, CompileOptions options);
  std::string name() const override { return "Compiled(" + inner_->name() + ")"; }
  const CompileOptions& options() const { return options_; }

 private:
  CompileOptions options_;
};

std::shared_ptr<CompiledModule> compile(std::shared_ptr<nn::Module> module, CompileOptions options = {});

}  // namespace loom
