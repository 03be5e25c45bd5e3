// TensorDataset: validation of the shared first dimension and row views.
#include "data/dataset.h"

#include "tensor/native.h"

namespace loom::data {

TensorDataset::TensorDataset(std::vector<Tensor> tensors) : tensors_(std::move(tensors)) {
  if (tensors_.empty())
    throw ValueError("TensorDataset: at least one tensor is required");
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    if (!t.defined()) throw ValueError(detail::concat("TensorDataset: tensor ", i, " is undefined"));
    if (t.dim() == 0)
      throw ValueError(detail::concat("TensorDataset: tensor ", i,
                                      " is 0-dim; every tensor needs a first dim to index rows"));
  }
  size_ = tensors_[0].size(0);
  for (size_t i = 1; i < tensors_.size(); ++i) {
    if (tensors_[i].size(0) != size_)
      throw ValueError(detail::concat(
          "TensorDataset: size mismatch between tensors: tensor ", i, " has shape ",
          shape_str(tensors_[i].sizes()), " but tensor 0 has shape ", shape_str(tensors_[0].sizes()),
          "; all tensors must have the same size in dim 0 (", size_, ")"));
  }
}

Example TensorDataset::get(int64_t index) const {
  if (index < 0 || index >= size_)
    throw ValueError(detail::concat("TensorDataset: index ", index, " is out of range for ",
                                    size_, " examples"));
  Example out;
  out.reserve(tensors_.size());
  for (const Tensor& t : tensors_) out.push_back(native::select(t, 0, index));
  return out;
}

}  // namespace loom::data
