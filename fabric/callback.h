// Callbacks: objects with named hooks that Fabric::call("hook", args...) invokes.
//
// A hook is registered by name with a typed function: `on("on_train_epoch_end",
// [](int64_t epoch, Tensor loss) {...})`. call() packs its arguments into std::any and each
// callback that has the hook unpacks them to its parameter types: arithmetic arguments
// convert between integer and floating types, and class-type lvalues travel by reference
// (so a hook may take `Fabric&`). A callback without the hook is skipped; a hook called with
// arguments it cannot take fails with a ValueError naming the hook and the position.
#pragma once

#include <any>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "tensor/error.h"

namespace loom {

namespace detail {

template <class T>
T any_arg(std::any& a, const std::string& hook, size_t pos) {
  using D = std::remove_cvref_t<T>;
  if constexpr (std::is_copy_constructible_v<D>)
    if (auto* v = std::any_cast<D>(&a)) return *v;
  if (auto* r = std::any_cast<std::reference_wrapper<D>>(&a)) return r->get();
  if constexpr (std::is_arithmetic_v<D>) {
    if (auto* v = std::any_cast<int>(&a)) return D(*v);
    if (auto* v = std::any_cast<long>(&a)) return D(*v);
    if (auto* v = std::any_cast<long long>(&a)) return D(*v);
    if (auto* v = std::any_cast<unsigned long>(&a)) return D(*v);
    if (auto* v = std::any_cast<double>(&a)) return D(*v);
    if (auto* v = std::any_cast<float>(&a)) return D(*v);
    if (auto* v = std::any_cast<bool>(&a)) return D(*v);
  }
  if constexpr (std::is_lvalue_reference_v<T> && !std::is_const_v<std::remove_reference_t<T>>) {
    throw ValueError(concat("hook '", hook, "': argument ", pos,
                            " was not passed as a modifiable reference of the expected type"));
  } else {
    throw ValueError(concat("hook '", hook, "': argument ", pos, " has type ", a.type().name(),
                            ", which the hook cannot take"));
  }
}

// Class-type lvalues travel by reference; everything else by value.
template <class A>
std::any pack_arg(A&& a) {
  using D = std::remove_cvref_t<A>;
  if constexpr (std::is_lvalue_reference_v<A> && std::is_class_v<D> && !std::is_copy_constructible_v<D>)
    return std::ref(a);
  else
    return D(std::forward<A>(a));
}

}  // namespace detail

class Callback {
 public:
  virtual ~Callback() = default;

  // Registers (or replaces) a named hook.
  template <class Fn>
  void on(const std::string& hook, Fn fn) {
    std::function f = fn;
    register_hook(hook, std::move(f));
  }
  bool has_hook(const std::string& hook) const { return hooks_.count(hook) > 0; }
  void invoke(const std::string& hook, std::vector<std::any>& args) const {
    auto it = hooks_.find(hook);
    if (it != hooks_.end()) it->second(args);
  }

 private:
  template <class... Args>
  void register_hook(const std::string& hook, std::function<void(Args...)> fn) {
    hooks_[hook] = [hook, fn = std::move(fn)](std::vector<std::any>& args) {
      if (args.size() != sizeof...(Args))
        throw ValueError(detail::concat("hook '", hook, "' takes ", sizeof...(Args),
                                        " arguments but was called with ", args.size()));
      call_with(fn, args, hook, std::index_sequence_for<Args...>{});
    };
  }
  template <class... Args, size_t... I>
  static void call_with(const std::function<void(Args...)>& fn, std::vector<std::any>& args,
                        const std::string& hook, std::index_sequence<I...>) {
    fn(detail::any_arg<Args>(args[I], hook, I)...);
  }

  std::map<std::string, std::function<void(std::vector<std::any>&)>> hooks_;
};

}  // namespace loom
