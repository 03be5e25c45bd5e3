// ScopeStack: a stack of RAII guards entered in order and left in reverse, as one object.
// Fabric's init_module() and FabricModule's forward return or hold one; leaving restores every
// thread-local default even when an exception passes through (each guard's destructor runs).
#pragma once

#include <memory>
#include <utility>
#include <vector>

namespace loom {

class ScopeStack {
 public:
  ScopeStack() = default;
  ScopeStack(ScopeStack&&) = default;
  ScopeStack& operator=(ScopeStack&& other) noexcept {
    clear();
    guards_ = std::move(other.guards_);
    return *this;
  }
  ~ScopeStack() { clear(); }

  // Enters a guard now: push<DefaultDTypeGuard>(DType::bf16).
  template <class Guard, class... Args>
  void push(Args&&... args) {
    guards_.push_back(std::make_shared<Holder<Guard>>(std::forward<Args>(args)...));
  }
  void push(ScopeStack&& inner) {
    for (auto& g : inner.guards_) guards_.push_back(std::move(g));
    inner.guards_.clear();
  }
  size_t size() const { return guards_.size(); }

 private:
  struct Base {
    virtual ~Base() = default;
  };
  template <class Guard>
  struct Holder : Base {
    template <class... Args>
    explicit Holder(Args&&... args) : guard(std::forward<Args>(args)...) {}
    Guard guard;
  };
  void clear() {
    while (!guards_.empty()) guards_.pop_back();  // reverse order of entry
  }
  std::vector<std::shared_ptr<Base>> guards_;
};

}  // namespace loom
