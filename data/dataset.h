// Dataset: random access to examples by index; TensorDataset: rows of a few tensors.
//
// An Example is the list of tensors one index yields (e.g. {input, target}); the DataLoader's
// collate function turns a list of them into a Batch. get() must be safe to call from several
// threads at once (DataLoader workers do), so datasets keep no per-call mutable state.
// Deliberately not here: iterable (stream) datasets, transforms, and file formats.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace loom::data {

using Example = std::vector<Tensor>;

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // The example at `index` in [0, size()); called concurrently by worker threads.
  virtual Example get(int64_t index) const = 0;
};

// Wraps tensors that share their first dimension; example i is {t[i] for t in tensors}, each a
// view (no copy: the collate step copies into the batch anyway).
class TensorDataset : public Dataset {
 public:
  explicit TensorDataset(std::vector<Tensor> tensors);

  int64_t size() const override { return size_; }
  Example get(int64_t index) const override;
  const std::vector<Tensor>& tensors() const { return tensors_; }

 private:
  std::vector<Tensor> tensors_;
  int64_t size_ = 0;  // rows, the shared size(0)
};

}  // namespace loom::data
