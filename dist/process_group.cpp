// ProcessGroup's blocking forms that allocate their output; see process_group.h.
#include "dist/process_group.h"

#include "tensor/native.h"

namespace loom::dist {

Tensor ProcessGroup::all_gather(const Tensor& t) {
  LOOM_VALUE_CHECK(t.defined(), "all_gather: the input is an undefined tensor");
  Shape shape{int64_t(size())};
  shape.insert(shape.end(), t.sizes().begin(), t.sizes().end());
  Tensor out = native::empty(shape, t.dtype(), t.device());
  all_gather_async(out, t)->wait();
  return out;
}

Tensor ProcessGroup::reduce_scatter(const Tensor& input, ReduceOp op) {
  LOOM_VALUE_CHECK(input.defined(), "reduce_scatter: the input is an undefined tensor");
  LOOM_VALUE_CHECK(input.dim() >= 1 && input.size(0) % size() == 0,
                   "reduce_scatter: the input's dim 0 must split evenly over ", size(),
                   " ranks, got shape ", shape_str(input.sizes()));
  Shape shape = input.sizes();
  shape[0] /= size();
  Tensor out = native::empty(shape, input.dtype(), input.device());
  reduce_scatter_async(out, input, op)->wait();
  return out;
}

}  // namespace loom::dist
