// default_collate and the copy-based stack it uses.
//
// The stack is written here with native::empty + native::copy_ into select() views rather than
// calling native::stack, so the data layer needs only the tensor core: one strided copy per
// example row, which is all a stack does anyway.
#include "data/collate.h"

#include "tensor/native.h"

namespace loom::data {

Tensor stack_rows(const std::vector<Tensor>& tensors, const char* what) {
  if (tensors.empty()) throw ValueError(detail::concat(what, ": nothing to stack (no examples)"));
  const Tensor& first = tensors[0];
  if (!first.defined()) throw ValueError(detail::concat(what, ": tensor 0 is undefined"));
  DType dtype = first.dtype();
  for (size_t i = 1; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    if (!t.defined()) throw ValueError(detail::concat(what, ": tensor ", i, " is undefined"));
    if (t.sizes() != first.sizes())
      throw ValueError(detail::concat(what, ": cannot stack shape ", shape_str(t.sizes()),
                                      " (example ", i, ") with shape ", shape_str(first.sizes()),
                                      " (example 0); pad the examples or pass a custom collate"));
    if (t.device() != first.device())
      throw ValueError(detail::concat(what, ": example ", i, " is on ", t.device(),
                                      " but example 0 is on ", first.device()));
    dtype = promote_types(dtype, t.dtype());
  }
  Shape sizes = first.sizes();
  sizes.insert(sizes.begin(), int64_t(tensors.size()));
  Tensor out = native::empty(sizes, dtype, first.device());
  if (out.is_meta()) return out;  // Note [Meta tensors]: shape and dtype only
  for (size_t i = 0; i < tensors.size(); ++i)
    native::copy_(native::select(out, 0, int64_t(i)), tensors[i]);
  return out;
}

Batch default_collate(std::vector<Example> examples) {
  if (examples.empty()) throw ValueError("default_collate: the batch has no examples");
  size_t fields = examples[0].size();
  for (size_t i = 1; i < examples.size(); ++i)
    if (examples[i].size() != fields)
      throw ValueError(detail::concat("default_collate: example ", i, " has ", examples[i].size(),
                                      " fields but example 0 has ", fields,
                                      "; every example must yield the same fields"));
  Batch batch;
  batch.reserve(fields);
  std::vector<Tensor> column(examples.size());
  for (size_t f = 0; f < fields; ++f) {
    for (size_t i = 0; i < examples.size(); ++i) column[i] = std::move(examples[i][f]);
    std::string what = detail::concat("default_collate (field ", f, ")");
    batch.push_back(stack_rows(column, what.c_str()));
  }
  return batch;
}

}  // namespace loom::data
