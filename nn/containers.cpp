#include "nn/containers.h"

namespace loom::nn {

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (const auto& m : modules) push_back(m);
}

void Sequential::push_back(std::shared_ptr<Module> m) {
  register_module(std::to_string(items_.size()), m);
  items_.push_back(std::move(m));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& m : items_) h = (*m)(h);
  return h;
}

ModuleList::ModuleList(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (const auto& m : modules) push_back(m);
}

void ModuleList::push_back(std::shared_ptr<Module> m) {
  register_module(std::to_string(items_.size()), m);
  items_.push_back(std::move(m));
}

void ModuleDict::insert(const std::string& key, std::shared_ptr<Module> m) {
  register_module(key, std::move(m));
}

std::shared_ptr<Module> ModuleDict::operator[](const std::string& key) const {
  auto children = named_children();  // a copy: keep it alive while we read from it
  const auto* m = children.find(key);
  if (!m) throw ValueError("ModuleDict: no module named '" + key + "'");
  return *m;
}

}  // namespace loom::nn
