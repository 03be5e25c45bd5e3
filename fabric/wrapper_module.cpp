#include "fabric/wrapper_module.h"

#include "core/error.h"

namespace loom {

WrapperModule::WrapperModule(std::shared_ptr<nn::Module> inner, const char* what)
    : inner_(std::move(inner)) {
  if (!inner_) throw ValueError(std::string(what) + ": the module is null");
}

}  // namespace loom
