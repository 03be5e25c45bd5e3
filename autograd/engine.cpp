#include "autograd/engine.h"

#include <queue>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/native.h"

namespace loom::autograd {
namespace {

struct ByLatest {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

// Fits a gradient to the input it flows into: sums over broadcast dims, casts the dtype.
Tensor fit_to_input(Tensor g, const InputMeta& meta) {
  if (!g.defined()) return g;
  if (g.sizes() != meta.sizes) {
    // Equal element counts: the gradient of a view (view, flatten, squeeze, 1-D matmul's
    // reshape to 0-dim) or of a broadcast that only added size-1 dims; a reshape fits it.
    // Otherwise dims were broadcast and are summed away.
    if (shape_numel(g.sizes()) == shape_numel(meta.sizes))
      g = native::reshape(g, meta.sizes);
    else
      g = native::sum_to(g, meta.sizes);
  }
  if (g.dtype() != meta.dtype) g = native::to(g, g.device(), meta.dtype);
  return g;
}

// Adds b into the running gradient a (a may be undefined).
void accumulate(Tensor& a, const Tensor& b) {
  if (!b.defined()) return;
  if (!a.defined()) {
    a = b;
    return;
  }
  a = native::binary(native::BinaryOp::add, a, b);
}

}  // namespace

void run_backward(const TensorList& roots, const TensorList& grad_roots, bool retain_graph) {
  NoGradGuard no_grad;  // gradients are computed without recording history

  // 1. Walk the graph once (iteratively) to count, for each node, how many edges feed it.
  std::unordered_map<Node*, int> dependencies;
  std::vector<Node*> stack;
  std::vector<std::shared_ptr<Node>> keep_alive;
  for (const Tensor& r : roots) {
    Edge e = gradient_edge(r);
    if (!e.fn)
      throw RuntimeError("backward: the tensor does not require grad and has no grad_fn; call "
                         "requires_grad_() on the leaves you want gradients for");
    keep_alive.push_back(e.fn);
    if (dependencies.emplace(e.fn.get(), 0).second) stack.push_back(e.fn.get());
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.fn) continue;
      auto [it, inserted] = dependencies.emplace(e.fn.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(e.fn.get());
    }
  }

  // 2. Seed the roots' gradient buffers and run nodes as they become ready.
  std::unordered_map<Node*, TensorList> buffers;
  std::priority_queue<Node*, std::vector<Node*>, ByLatest> ready;
  for (size_t i = 0; i < roots.size(); ++i) {
    Edge e = gradient_edge(roots[i]);
    TensorList& buf = buffers[e.fn.get()];
    buf.resize(e.fn->num_outputs);
    accumulate(buf[e.input_nr], grad_roots[i]);
  }
  for (const auto& fn : keep_alive)
    if (dependencies[fn.get()] == 0) {
      dependencies[fn.get()] = -1;  // queued
      ready.push(fn.get());
    }

  std::vector<Node*> ran;
  while (!ready.empty()) {
    Node* node = ready.top();
    ready.pop();
    TensorList grads = std::move(buffers[node]);
    buffers.erase(node);
    grads.resize(node->num_outputs);
    for (auto& [output, hook] : node->pre_hooks) {
      Tensor replaced = hook.second(grads[output]);
      if (replaced.defined()) grads[output] = replaced;
    }
    // A node that no gradient reached (a branch cut off by argmax, an unused split part)
    // still releases its children; multi-output backward functions treat undefined output
    // gradients as zeros.
    bool any = false;
    for (const Tensor& g : grads) any = any || g.defined();
    TensorList input_grads = any ? node->apply(std::move(grads)) : TensorList{};
    ran.push_back(node);
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.fn) continue;
      if (i < input_grads.size() && input_grads[i].defined()) {
        TensorList& buf = buffers[e.fn.get()];
        buf.resize(e.fn->num_outputs);
        accumulate(buf[e.input_nr], fit_to_input(input_grads[i], node->input_meta[i]));
      }
      if (--dependencies[e.fn.get()] == 0) ready.push(e.fn.get());
    }
  }
  if (!retain_graph)
    for (Node* n : ran) n->release();
}

}  // namespace loom::autograd
