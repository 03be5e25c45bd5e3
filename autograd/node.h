// Graph nodes of the dynamic tape.
//
// Each differentiable op whose inputs need grad records one Node on its output(s): the node
// keeps an Edge per input (the producer node of that input, or the leaf's AccumulateGrad) and
// a backward function that maps output gradients to input gradients. The engine walks nodes
// from the loss back to the leaves (autograd/engine.h).
//
// Note [Saved tensors]: a node saves detached aliases (same storage, no history) so that a
// saved output never points back at its own node (no reference cycle), together with the
// storage version at save time; unpacking after an in-place write fails loudly, as PyTorch.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace loom::autograd {

class Node;

struct Edge {
  std::shared_ptr<Node> fn;  // null: this input needs no gradient
  uint32_t input_nr = 0;     // which output of fn the gradient belongs to
};

// What the engine needs to fit a gradient to the input it flows into.
struct InputMeta {
  Shape sizes;
  DType dtype = DType::f32;
};

class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  // The saved value; throws RuntimeError if it was modified in place since it was saved.
  Tensor unpack() const;
  bool defined() const { return alias_.defined(); }

 private:
  Tensor alias_;
  uint64_t version_ = 0;
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  virtual ~Node() = default;
  virtual std::string name() const = 0;
  // grads: one per output (undefined where no gradient arrived); returns one per input.
  virtual TensorList apply(TensorList grads) = 0;
  // Drops saved state after a backward without retain_graph.
  virtual void release() {}

  std::vector<Edge> next_edges;
  std::vector<InputMeta> input_meta;  // parallel to next_edges
  uint64_t sequence_nr = 0;           // creation order: later nodes run first among the ready
  uint32_t num_outputs = 1;
  // Hooks on the gradient of output i (register_hook/retain_grad on non-leaf tensors).
  std::vector<std::pair<uint32_t, std::pair<int, GradHook>>> pre_hooks;
};

// The sink of a leaf: accumulates the incoming gradient into leaf.grad(), then runs the
// leaf's post-accumulate-grad hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::string name() const override { return "AccumulateGrad"; }
  TensorList apply(TensorList grads) override;
  const std::shared_ptr<TensorImpl>& leaf() const { return leaf_; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

using BackwardFn = std::function<TensorList(const TensorList& grads)>;

// A node whose backward is a lambda written next to the op's forward (autograd/functions_*).
class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::string name() const override { return name_; }
  TensorList apply(TensorList grads) override;
  void release() override { fn_ = nullptr; }

 private:
  std::string name_;
  BackwardFn fn_;
};

// True when grad mode is on and some input requires grad: only then is a node recorded.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const TensorList& inputs);
inline bool needs_grad(const Tensor& a) { return needs_grad({&a}); }
inline bool needs_grad(const Tensor& a, const Tensor& b) { return needs_grad({&a, &b}); }

// Records a FunctionNode named `name` on `outputs` with edges to `inputs`.
void record(const char* name, const TensorList& inputs, const TensorList& outputs, BackwardFn fn);
inline void record(const char* name, const TensorList& inputs, const Tensor& output,
                   BackwardFn fn) {
  record(name, inputs, TensorList{output}, std::move(fn));
}

// The edge a gradient for `t` should flow along (its grad_fn, or its leaf accumulator).
Edge gradient_edge(const Tensor& t);

}  // namespace loom::autograd
