// The backward engine: runs the recorded graph from some roots back to the leaves.
//
// Order: a node runs once every node that feeds it a gradient has run (dependency counts from
// one iterative graph walk, no recursion); among the ready nodes the most recently created
// runs first, as PyTorch does, so leaves are reached in roughly reverse forward order (which
// is what lets DDP start all-reducing the last layers' gradients while backward continues).
#pragma once

#include "tensor/tensor.h"

namespace loom::autograd {

// roots[i] receives grad_roots[i] (same shape). Accumulates into leaves' .grad(); frees saved
// tensors unless retain_graph.
void run_backward(const TensorList& roots, const TensorList& grad_roots, bool retain_graph);

}  // namespace loom::autograd
