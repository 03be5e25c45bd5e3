// Tensor's autograd state methods (Note [Autograd fields] in tensor/tensor.h).
#include <algorithm>
#include <atomic>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom {
namespace {
std::atomic<int> g_next_hook_id{1};
}

Tensor& Tensor::set_requires_grad(bool r) {
  TensorImpl& t = *impl_;
  if (!is_leaf() && !r)
    throw ValueError("requires_grad_(false): only leaf tensors can stop requiring grad; use "
                     "detach() on a non-leaf");
  if (r && !is_floating(t.dtype))
    throw ValueError(detail::concat("requires_grad_: only floating tensors can require "
                                    "gradients, this one is ", t.dtype));
  t.requires_grad = r;
  return *this;
}

Tensor Tensor::grad() const {
  const TensorImpl& t = checked();
  return t.grad ? Tensor(t.grad) : Tensor();
}

void Tensor::set_grad(const Tensor& g) {
  TensorImpl& t = *impl_;
  if (g.defined() && g.sizes() != t.sizes)
    throw ValueError(detail::concat("set_grad: gradient shape ", shape_str(g.sizes()),
                                    " does not match the tensor's ", shape_str(t.sizes)));
  t.grad = g.defined() ? g.impl_ptr() : nullptr;
}

void Tensor::retain_grad() {
  if (is_leaf()) return;  // leaves keep their grad anyway
  if (impl_->retains_grad) return;
  impl_->retains_grad = true;
  std::weak_ptr<TensorImpl> weak = impl_;
  impl_->grad_fn->pre_hooks.push_back(
      {impl_->output_nr, {0, [weak](const Tensor& g) {
                            if (auto self = weak.lock(); self && g.defined()) {
                              NoGradGuard no_grad;
                              self->grad = self->grad ? native::binary(native::BinaryOp::add,
                                                                       Tensor(self->grad), g)
                                                            .impl_ptr()
                                                      : native::clone(g).impl_ptr();
                            }
                            return Tensor();
                          }}});
}

Tensor Tensor::detach() const {
  const TensorImpl& t = checked();
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage;
  impl->sizes = t.sizes;
  impl->strides = t.strides;
  impl->offset = t.offset;
  impl->dtype = t.dtype;
  return Tensor(std::move(impl));
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  Tensor g = gradient;
  if (!g.defined()) {
    if (numel() != 1)
      throw ValueError(detail::concat("backward: gradient can be implicitly created only for a "
                                      "one-element tensor, this one has shape ",
                                      shape_str(sizes()), "; pass a gradient of that shape"));
    g = native::empty(sizes(), dtype(), device());
    native::fill_(g, 1.0);
  } else if (g.sizes() != sizes()) {
    throw ValueError(detail::concat("backward: gradient shape ", shape_str(g.sizes()),
                                    " does not match the tensor's ", shape_str(sizes())));
  }
  autograd::run_backward({*this}, {g}, retain_graph);
}

int Tensor::register_hook(GradHook hook) {
  if (!requires_grad())
    throw ValueError("register_hook: the tensor does not require grad, so no gradient will flow "
                     "to it; call requires_grad_() first");
  int id = g_next_hook_id.fetch_add(1);
  if (is_leaf()) {
    impl_->grad_hooks.emplace_back(id, std::move(hook));
  } else {
    // retain_grad's hook (id 0) stays after this output's other hooks, so that .grad() is
    // the gradient they hand on, as in PyTorch.
    auto& hooks = impl_->grad_fn->pre_hooks;
    uint32_t out = impl_->output_nr;
    auto retain = std::find_if(hooks.begin(), hooks.end(), [out](const auto& h) {
      return h.first == out && h.second.first == 0;
    });
    hooks.insert(retain, {out, {id, std::move(hook)}});
  }
  return id;
}

int Tensor::register_post_accumulate_grad_hook(PostAccumulateGradHook hook) {
  if (!is_leaf() || !requires_grad())
    throw ValueError("register_post_accumulate_grad_hook: only leaf tensors that require grad "
                     "accumulate a .grad(); register it on a parameter");
  int id = g_next_hook_id.fetch_add(1);
  impl_->post_accumulate_grad_hooks.emplace_back(id, std::move(hook));
  return id;
}

void Tensor::remove_hook(int handle) {
  auto drop = [handle](auto& v) {
    std::erase_if(v, [handle](const auto& p) { return p.first == handle; });
  };
  drop(impl_->grad_hooks);
  drop(impl_->post_accumulate_grad_hooks);
  if (impl_->grad_fn)
    std::erase_if(impl_->grad_fn->pre_hooks,
                  [handle](const auto& p) { return p.second.first == handle; });
}

}  // namespace loom
