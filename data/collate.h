// Collate: how a list of examples becomes one batch.
//
// default_collate stacks field k of every example along a new dim 0, so examples of shapes
// {(3, 4), ()} become a batch {(B, 3, 4), (B)}. A custom Collate may do anything else (pad,
// tokenize, keep lists); it runs on the worker thread that fetched the examples.
#pragma once

#include <functional>
#include <vector>

#include "data/dataset.h"

namespace loom::data {

using Batch = std::vector<Tensor>;
using Collate = std::function<Batch(std::vector<Example>)>;

// Field-wise stack along a new dim 0. All examples need the same number of fields; a field
// needs the same shape and device in every example; mixed dtypes promote (as torch.stack).
Batch default_collate(std::vector<Example> examples);

// Copies `tensors` (same shape, same device) into one new contiguous tensor of shape
// (tensors.size(), *shape) with dtype promoted across them. Meta inputs give a meta output.
// `what` names the caller in error messages.
Tensor stack_rows(const std::vector<Tensor>& tensors, const char* what);

}  // namespace loom::data
