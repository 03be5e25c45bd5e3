#include "autograd/node.h"

#include <atomic>
#include <mutex>

#include "autograd/grad_mode.h"
#include "tensor/native.h"

namespace loom::autograd {
namespace {
std::atomic<uint64_t> g_next_sequence_nr{0};
// Guards the lazy creation of leaves' accumulators: threads recording graphs concurrently
// over shared parameters (DataParallel's replicas) must get the same AccumulateGrad, and a
// weak_ptr may not be read and assigned at once.
std::mutex g_accumulator_mu;

Tensor detached_alias(const Tensor& t) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage();
  impl->sizes = t.sizes();
  impl->strides = t.strides();
  impl->offset = t.storage_offset();
  impl->dtype = t.dtype();
  return Tensor(std::move(impl));
}
}  // namespace

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  alias_ = detached_alias(t);
  version_ = t.version();
}

Tensor SavedTensor::unpack() const {
  if (alias_.defined() && alias_.version() != version_)
    throw RuntimeError(detail::concat(
        "backward: a tensor saved for the gradient (shape ", shape_str(alias_.sizes()), ", ",
        alias_.dtype(), ") was modified by an in-place operation: it is at version ",
        alias_.version(), ", expected version ", version_,
        ". Use an out-of-place op, or clone() the tensor before modifying it"));
  return alias_;
}

TensorList FunctionNode::apply(TensorList grads) {
  if (!fn_)
    throw RuntimeError(detail::concat(
        "backward: trying to run ", name_, " a second time, but its saved tensors were freed "
        "after the first backward; pass retain_graph=true to the first backward() call"));
  return fn_(grads);
}

TensorList AccumulateGrad::apply(TensorList grads) {
  Tensor g = grads.at(0);
  for (auto& [id, hook] : leaf_->grad_hooks) {
    Tensor replaced = hook(g);
    if (replaced.defined()) g = replaced;
  }
  if (g.defined()) {
    NoGradGuard no_grad;
    if (!leaf_->grad) {
      // Steal the incoming buffer when nothing else can see it (one handle here and one in
      // `grads`, sole owner of its storage, dense): otherwise copy, so that .grad() never
      // aliases another gradient or a saved tensor.
      bool sole_owner = g.impl_ptr().use_count() <= 2 && g.storage().use_count() == 1 &&
                        g.is_contiguous() && g.storage_offset() == 0;
      leaf_->grad = sole_owner ? g.impl_ptr() : native::clone(g).impl_ptr();
    } else {
      native::binary_(native::BinaryOp::add, Tensor(leaf_->grad), g);
    }
  }
  Tensor leaf(leaf_);
  for (auto& [id, hook] : leaf_->post_accumulate_grad_hooks) hook(leaf);
  return {};
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const TensorList& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  TensorImpl* impl = t.impl();
  if (impl->grad_fn) return {impl->grad_fn, impl->output_nr};
  std::lock_guard<std::mutex> lock(g_accumulator_mu);
  std::shared_ptr<Node> acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    // Runs as soon as it is ready, ahead of every function node: a leaf's .grad() and its
    // post-accumulate-grad hooks come while backward continues below it (DDP overlap).
    acc->sequence_nr = UINT64_MAX;
    impl->grad_accumulator = acc;
  }
  return {acc, 0};
}

void record(const char* name, const TensorList& inputs, const TensorList& outputs, BackwardFn fn) {
  auto node = std::make_shared<FunctionNode>(name, std::move(fn));
  node->sequence_nr = g_next_sequence_nr.fetch_add(1, std::memory_order_relaxed);
  node->num_outputs = uint32_t(outputs.size());
  node->next_edges.reserve(inputs.size());
  node->input_meta.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    node->next_edges.push_back(gradient_edge(in));
    node->input_meta.push_back(in.defined() ? InputMeta{in.sizes(), in.dtype()} : InputMeta{});
  }
  for (uint32_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* out = outputs[i].impl();
    if (!out) continue;
    out->grad_fn = node;
    out->output_nr = i;
    out->requires_grad = true;
  }
}

}  // namespace loom::autograd
