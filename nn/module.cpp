#include "nn/module.h"

#include <algorithm>
#include <atomic>
#include <cxxabi.h>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "tensor/native.h"

namespace loom::nn {
namespace {
std::atomic<int> g_next_hook{1};

// The modules that moves and materialize() act on: the virtual walk_modules(), so that
// wrappers (FabricModule) present the wrapped tree. It needs no std::shared_ptr owner (a stack
// object works) and builds no names.
std::vector<Module*> module_tree(Module& root) {
  std::vector<Module*> out;
  root.walk_modules(out);
  return out;
}
}  // namespace

Parameter::Parameter(const Tensor& t, bool requires_grad)
    : Tensor(t.is_leaf() ? t : t.detach()) {
  set_requires_grad(requires_grad);
}

void set_data(const Tensor& t, const Tensor& data) {
  TensorImpl* impl = t.impl();
  const TensorImpl* src = data.impl();
  bool same_shape = impl->sizes == src->sizes;
  impl->storage = src->storage;
  impl->sizes = src->sizes;
  impl->strides = src->strides;
  impl->offset = src->offset;
  impl->dtype = src->dtype;
  if (impl->grad && !same_shape) impl->grad = nullptr;
}

Tensor Module::forward(const Tensor&) {
  throw RuntimeError(name() + ": forward(const Tensor&) is not implemented; override it, or call "
                              "the module's own method for its signature");
}

Tensor Module::operator()(const Tensor& input) {
  Tensor x = input;
  for (auto& [id, hook] : pre_hooks_)
    if (auto replaced = hook(*this, x)) x = *replaced;
  Tensor out = forward(x);
  for (auto& [id, hook] : post_hooks_)
    if (auto replaced = hook(*this, x, out)) out = *replaced;
  return out;
}

std::string Module::name() const {
  int status = 0;
  const char* mangled = typeid(*this).name();
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string n = status == 0 && demangled ? demangled : mangled;
  std::free(demangled);
  if (auto pos = n.rfind("::"); pos != std::string::npos) n = n.substr(pos + 2);
  return n;
}

void Module::check_name(const std::string& n, const char* what) const {
  if (n.empty() || n.find('.') != std::string::npos)
    throw ValueError(detail::concat(name(), ": ", what, " name '", n,
                                    "' must be non-empty and contain no '.'"));
  if (parameters_.contains(n) || buffers_.contains(n) || children_.contains(n))
    throw ValueError(detail::concat(name(), ": '", n, "' is already registered; choose another ",
                                    what, " name"));
}

Tensor Module::register_parameter(const std::string& n, const Tensor& t, bool requires_grad) {
  check_name(n, "parameter");
  if (!t.is_floating_point() && requires_grad)
    throw ValueError(detail::concat(name(), ": parameter '", n, "' has dtype ", t.dtype(),
                                    "; parameters must be floating (register it as a buffer)"));
  Tensor p = Parameter(t, requires_grad);
  parameters_.insert(n, p);
  return p;
}

Tensor Module::register_buffer(const std::string& n, const Tensor& t, bool persistent) {
  check_name(n, "buffer");
  buffers_.insert(n, t);
  if (!persistent) non_persistent_.push_back(n);
  return t;
}

void Module::replace_parameter(const std::string& n, const Tensor& t) {
  if (!parameters_.contains(n))
    throw ValueError(detail::concat(name(), ": no parameter named '", n, "' to replace"));
  parameters_.insert(n, t);
}

void Module::add_child(const std::string& n, std::shared_ptr<Module> module) {
  check_name(n, "module");
  if (!module) throw ValueError(detail::concat(name(), ": child module '", n, "' is null"));
  children_.insert(n, std::move(module));
}

void Module::walk_parameters(ParameterWalk& walk, bool recurse) const {
  const size_t base = walk.prefix.size();
  for (const auto& [n, p] : parameters_) {
    walk.list.push_back(p);
    if (walk.named) walk.names.push_back(walk.prefix + n);
  }
  if (!recurse) return;
  for (const auto& [cn, child] : children_) {
    if (walk.named) walk.prefix.append(cn).push_back('.');
    child->walk_parameters(walk, true);
    walk.prefix.resize(base);
  }
}

namespace {

// Which entries of `list` repeat an earlier one (a parameter shared by two modules). Sorting
// the identities finds that there are none, the usual case, without a hash set.
std::vector<bool> repeats(const std::vector<Tensor>& list) {
  std::vector<const TensorImpl*> ids(list.size());
  for (size_t i = 0; i < list.size(); ++i) ids[i] = list[i].impl();
  std::sort(ids.begin(), ids.end());
  if (std::adjacent_find(ids.begin(), ids.end()) == ids.end()) return {};
  std::vector<bool> out(list.size());
  std::unordered_set<const TensorImpl*> seen;
  for (size_t i = 0; i < list.size(); ++i) out[i] = !seen.insert(list[i].impl()).second;
  return out;
}

}  // namespace

OrderedDict<Tensor> Module::named_parameters(bool recurse) const {
  ParameterWalk walk;
  walk.named = true;
  walk_parameters(walk, recurse);
  std::vector<bool> skip = repeats(walk.list);
  OrderedDict<Tensor> out;
  for (size_t i = 0; i < walk.list.size(); ++i)
    if (skip.empty() || !skip[i]) out.insert(walk.names[i], std::move(walk.list[i]));
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  ParameterWalk walk;
  walk_parameters(walk, recurse);
  std::vector<bool> skip = repeats(walk.list);
  if (skip.empty()) return std::move(walk.list);
  std::vector<Tensor> out;
  for (size_t i = 0; i < walk.list.size(); ++i)
    if (!skip[i]) out.push_back(std::move(walk.list[i]));
  return out;
}

OrderedDict<Tensor> Module::named_buffers(bool recurse) const {
  OrderedDict<Tensor> out;
  for (const auto& [n, b] : buffers_) out.insert(n, b);
  if (recurse)
    for (const auto& [cn, child] : children_)
      for (const auto& [n, b] : child->named_buffers(true)) out.insert(cn + "." + n, b);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const { return named_buffers(recurse).values(); }

std::vector<std::shared_ptr<Module>> Module::children() const { return children_.values(); }

OrderedDict<std::shared_ptr<Module>> Module::named_children() const { return children_; }

void Module::walk_modules(std::vector<Module*>& out) {
  std::vector<Module*> stack{this};  // iterative depth-first, children in registration order
  while (!stack.empty()) {
    Module* m = stack.back();
    stack.pop_back();
    out.push_back(m);
    const auto& kids = m->children_.items();
    for (auto it = kids.rbegin(); it != kids.rend(); ++it) stack.push_back(it->second.get());
  }
}

OrderedDict<std::shared_ptr<Module>> Module::named_modules(const std::string& prefix) {
  OrderedDict<std::shared_ptr<Module>> out;
  // Iterative depth-first walk, children in registration order.
  std::shared_ptr<Module> self = weak_from_this().lock();
  if (!self)
    throw RuntimeError(detail::concat(name(), ".named_modules(): the module is not owned by a "
                                      "std::shared_ptr; create it with std::make_shared"));
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> stack{{prefix, self}};
  while (!stack.empty()) {
    auto [n, m] = stack.back();
    stack.pop_back();
    out.insert(n, m);
    const auto& kids = m->children_.items();
    for (auto it = kids.rbegin(); it != kids.rend(); ++it)
      stack.emplace_back(n.empty() ? it->first : n + "." + it->first, it->second);
  }
  return out;
}

std::vector<std::shared_ptr<Module>> Module::modules() { return named_modules().values(); }

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const Tensor& p : parameters())
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

int64_t Module::parameter_bytes() const {
  int64_t n = 0;
  for (const Tensor& p : parameters()) n += int64_t(p.nbytes());
  return n;
}

StateDict Module::state_dict() const {
  StateDict out;
  for (const auto& [n, p] : parameters_) out.insert(n, p);
  for (const auto& [n, b] : buffers_)
    if (std::find(non_persistent_.begin(), non_persistent_.end(), n) == non_persistent_.end())
      out.insert(n, b);
  for (const auto& [cn, child] : children_)
    for (const auto& [n, t] : child->state_dict()) out.insert(cn + "." + n, t);
  return out;
}

LoadStateDictResult Module::load_state_dict(const StateDict& state, bool strict) {
  LoadStateDictResult result;
  StateDict own = state_dict();
  for (const auto& [n, t] : own) {
    const Tensor* src = state.find(n);
    if (!src) {
      result.missing_keys.push_back(n);
      continue;
    }
    if (src->sizes() != t.sizes())
      throw ValueError(detail::concat("load_state_dict: size mismatch for '", n, "': checkpoint has ",
                                      shape_str(src->sizes()), ", the model has ",
                                      shape_str(t.sizes())));
  }
  for (const auto& [n, t] : state)
    if (!own.contains(n)) result.unexpected_keys.push_back(n);
  if (strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty())) {
    std::string msg = "load_state_dict: error(s) loading state into " + name() + ":";
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      msg += std::string(" ") + what + " keys:";
      for (const auto& k : keys) msg += " '" + k + "'";
      msg += ".";
    };
    list("missing", result.missing_keys);
    list("unexpected", result.unexpected_keys);
    throw ValueError(msg + " Pass strict=false to load the matching keys only.");
  }
  NoGradGuard no_grad;
  for (const auto& [n, t] : own)
    if (const Tensor* src = state.find(n)) {
      if (t.is_meta()) {
        // A meta module gets real tensors from the checkpoint (load-to-materialise).
        set_data(t, native::to(native::clone(*src), src->device(), t.dtype()));
      } else {
        native::copy_(t, *src);
      }
    }
  return result;
}

Module& Module::train(bool on) {
  training_ = on;
  for (auto& c : children()) c->train(on);
  return *this;
}

Module& Module::apply(const std::function<void(Module&)>& fn) {
  for (auto& c : children()) c->apply(fn);
  fn(*this);
  return *this;
}

void Module::transform_tensors(const std::function<Tensor(const Tensor&)>& fn) {
  NoGradGuard no_grad;
  for (Module* m : module_tree(*this)) {
    for (auto& [n, p] : m->parameters_) {
      Tensor data = fn(p);
      if (!data.is_same(p)) {
        Tensor grad = p.grad();
        set_data(p, data);
        if (grad.defined() && grad.sizes() == data.sizes()) p.set_grad(fn(grad));
      }
    }
    for (auto& [n, b] : m->buffers_) {
      Tensor data = fn(b);
      if (!data.is_same(b)) set_data(b, data);
    }
  }
}

Module& Module::to(Device device, DType dtype) {
  transform_tensors([&](const Tensor& t) {
    DType d = is_floating(t.dtype()) ? dtype : t.dtype();
    if (t.is_meta() && !device.is_meta())
      throw RuntimeError(detail::concat(name(), ".to(", device, "): the module has meta tensors, "
                                        "which hold no values to copy; use to_empty(", device,
                                        ") then reset_parameters(), or materialize(", device, ")"));
    return native::to(t, device, d);
  });
  return *this;
}

Module& Module::to(Device device) {
  transform_tensors([&](const Tensor& t) {
    if (t.is_meta() && !device.is_meta())
      throw RuntimeError(detail::concat(name(), ".to(", device, "): the module has meta tensors, "
                                        "which hold no values to copy; use to_empty(", device,
                                        ") then reset_parameters(), or materialize(", device, ")"));
    return native::to(t, device, t.dtype());
  });
  return *this;
}

Module& Module::to(DType dtype) {
  transform_tensors([&](const Tensor& t) {
    return is_floating(t.dtype()) ? native::to(t, t.device(), dtype) : t;
  });
  return *this;
}

Module& Module::to_empty(Device device) {
  transform_tensors([&](const Tensor& t) { return native::empty(t.sizes(), t.dtype(), device); });
  return *this;
}

Module& Module::materialize(Device device) {
  to_empty(device);
  // Children before parents, so a model's own scheme (GPT's) overrides its layers' defaults.
  std::vector<Module*> tree = module_tree(*this);
  for (auto it = tree.rbegin(); it != tree.rend(); ++it) (*it)->reset_parameters();
  return *this;
}

void Module::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (Tensor& p : parameters()) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (set_to_none) p.set_grad(Tensor());
    else native::fill_(g, 0.0);
  }
}

int Module::register_forward_pre_hook(ForwardPreHook hook) {
  int id = g_next_hook.fetch_add(1);
  pre_hooks_.emplace_back(id, std::move(hook));
  return id;
}

int Module::register_forward_hook(ForwardHook hook) {
  int id = g_next_hook.fetch_add(1);
  post_hooks_.emplace_back(id, std::move(hook));
  return id;
}

void Module::remove_hook(int handle) {
  std::erase_if(pre_hooks_, [&](const auto& p) { return p.first == handle; });
  std::erase_if(post_hooks_, [&](const auto& p) { return p.first == handle; });
}

}  // namespace loom::nn
