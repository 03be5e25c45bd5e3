// Callbacks: objects with named hooks that Fabric::call("hook", args...) invokes.
//
// A hook is registered by name with a typed function: `on("on_train_epoch_end",
// [](int64_t epoch, Tensor loss) {...})`. call() packs its arguments into std::any and each
// callback that has the hook unpacks them to its parameter types: arithmetic arguments
// convert between integer and floating types, class-type lvalues travel by reference (so a
// hook may take `Fabric&` or modify a caller's object) and string literals reach std::string.
// A callback without the hook is skipped; a hook called with arguments it cannot take fails
// with a ValueError naming the hook and the position.
#pragma once

#include <any>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace loom {

namespace detail {

template <class T>
T any_arg(std::any& a, const std::string& hook, size_t pos) {
  using D = std::remove_cvref_t<T>;
  constexpr bool modifiable = std::is_lvalue_reference_v<T> && !std::is_const_v<std::remove_reference_t<T>>;
  if constexpr (std::is_copy_constructible_v<D>)
    if (auto* v = std::any_cast<D>(&a)) return *v;
  if (auto* r = std::any_cast<std::reference_wrapper<D>>(&a)) return r->get();
  if constexpr (!modifiable) {
    if (auto* r = std::any_cast<std::reference_wrapper<const D>>(&a)) return r->get();
    // A converted value is stored back into the argument, so that a `const D&` parameter
    // binds to it rather than to a temporary that dies when this function returns.
    auto converted = [&](D value) -> T {
      if constexpr (std::is_reference_v<T>) {
        a = std::move(value);
        return *std::any_cast<D>(&a);
      } else {
        return value;
      }
    };
    if constexpr (std::is_same_v<D, std::string>)
      if (auto* v = std::any_cast<const char*>(&a)) return converted(D(*v));
    if constexpr (std::is_arithmetic_v<D>) {
      if (auto* v = std::any_cast<int>(&a)) return converted(D(*v));
      if (auto* v = std::any_cast<long>(&a)) return converted(D(*v));
      if (auto* v = std::any_cast<long long>(&a)) return converted(D(*v));
      if (auto* v = std::any_cast<unsigned long>(&a)) return converted(D(*v));
      if (auto* v = std::any_cast<double>(&a)) return converted(D(*v));
      if (auto* v = std::any_cast<float>(&a)) return converted(D(*v));
      if (auto* v = std::any_cast<bool>(&a)) return converted(D(*v));
    }
    throw ValueError(concat("hook '", hook, "': argument ", pos, " has type ", a.type().name(),
                            ", which the hook cannot take"));
  } else {
    throw ValueError(concat("hook '", hook, "': argument ", pos,
                            " was not passed as a modifiable reference of the expected type"));
  }
}

// Class-type lvalues travel by reference (const ones by const reference), so a hook taking
// `T&` modifies the caller's object; string literals travel as const char*; everything else
// by value. call() invokes the hooks before returning, so the references never dangle.
template <class A>
std::any pack_arg(A&& a) {
  using D = std::remove_cvref_t<A>;
  if constexpr (std::is_lvalue_reference_v<A> && std::is_class_v<D>) {
    if constexpr (std::is_const_v<std::remove_reference_t<A>>) return std::cref(a);
    else return std::ref(a);
  } else if constexpr (std::is_array_v<D>) {
    return std::decay_t<A>(a);
  } else {
    return D(std::forward<A>(a));
  }
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
