// BatchSampler: chunking one epoch of indices.
#include "data/batch_sampler.h"

#include "core/error.h"

namespace loom::data {

BatchSampler::BatchSampler(std::shared_ptr<Sampler> sampler, int64_t batch_size, bool drop_last)
    : sampler_(std::move(sampler)), batch_size_(batch_size), drop_last_(drop_last) {
  LOOM_VALUE_CHECK(sampler_ != nullptr, "BatchSampler: sampler is null");
  LOOM_VALUE_CHECK(batch_size >= 1, "BatchSampler: batch_size should be a positive integer, got ",
                   batch_size);
}

std::vector<std::vector<int64_t>> BatchSampler::batches() {
  std::vector<int64_t> order = sampler_->indices();
  std::vector<std::vector<int64_t>> out;
  out.reserve(order.size() / size_t(batch_size_) + 1);
  for (size_t begin = 0; begin < order.size(); begin += size_t(batch_size_)) {
    size_t end = std::min(order.size(), begin + size_t(batch_size_));
    if (drop_last_ && end - begin < size_t(batch_size_)) break;
    out.emplace_back(order.begin() + std::ptrdiff_t(begin), order.begin() + std::ptrdiff_t(end));
  }
  return out;
}

int64_t BatchSampler::size() const {
  int64_t n = sampler_->size();
  return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

}  // namespace loom::data
