#include "fabric/compile.h"

namespace loom {

CompiledModule::CompiledModule(std::shared_ptr<nn::Module> inner, CompileOptions options)
    : WrapperModule(std::move(inner), "compile"), options_(std::move(options)) {
  if (dynamic_cast<CompiledModule*>(inner_.get()))
    throw ValueError("compile: the module is already compiled; compile the original module once");
}

std::shared_ptr<CompiledModule> compile(std::shared_ptr<nn::Module> module, CompileOptions options) {
  return std::make_shared<CompiledModule>(std::move(module), std::move(options));
}

}  // namespace loom
