// ProcessGroup's blocking forms that allocate their output, the default coalesced
// all_reduce, and ReduceOp's name (reduce_op.h); see process_group.h.
#include "dist/process_group.h"

#include "dist/reduce_op.h"
#include "tensor/native.h"

namespace loom::dist {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
    case ReduceOp::min:
      return "min";
  }
  return "?";
}

void ProcessGroup::check_coalesced(const Tensor& output, const std::vector<Tensor>& parts) {
  const char* op = "all_reduce_coalesced";
  LOOM_VALUE_CHECK(output.defined() && output.dim() == 1 && output.is_contiguous(), op,
                   ": the output must be a defined, contiguous 1-D tensor");
  const auto* out_lo = static_cast<const char*>(output.raw_data_ptr());
  const auto* out_hi = out_lo + output.nbytes();
  int64_t offset = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Tensor& p = parts[i];
    LOOM_VALUE_CHECK(p.defined() && p.is_contiguous(), op, ": part ", i,
                     " must be a defined, contiguous tensor");
    LOOM_VALUE_CHECK(p.dtype() == output.dtype() && p.device() == output.device(), op,
                     ": part ", i, " is ", p.dtype(), " on ", p.device(), " but the output is ",
                     output.dtype(), " on ", output.device());
    const auto* lo = static_cast<const char*>(p.raw_data_ptr());
    const auto* hi = lo + p.nbytes();
    const auto* own = out_lo + offset * int64_t(dtype_size(output.dtype()));
    LOOM_VALUE_CHECK(hi <= out_lo || lo >= out_hi || lo == own, op, ": part ", i,
                     " overlaps the output other than at its own offset ", offset,
                     "; pass a separate tensor");
    offset += p.numel();
  }
  LOOM_VALUE_CHECK(offset == output.numel(), op, ": the parts hold ", offset,
                   " elements but the output has ", output.numel());
}

std::shared_ptr<Work> ProcessGroup::all_reduce_coalesced_async(const Tensor& output,
                                                               const std::vector<Tensor>& parts,
                                                               ReduceOp op) {
  check_coalesced(output, parts);
  int64_t offset = 0;
  for (const Tensor& p : parts) {
    Tensor dst = native::slice(output, 0, offset, offset + p.numel(), 1);
    if (p.raw_data_ptr() != dst.raw_data_ptr()) native::copy_(dst, native::reshape(p, {-1}));
    offset += p.numel();
  }
  return all_reduce_async(output, op);
}

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
