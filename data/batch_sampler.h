// BatchSampler: groups a sampler's indices into batches of batch_size.
//
// The last batch is short unless drop_last, in which case it is dropped. One batches() call
// draws one epoch from the underlying sampler (Note [Sampler epochs] in data/sampler.h).
#pragma once

#include <memory>
#include <vector>

#include "data/sampler.h"

namespace loom::data {

class BatchSampler {
 public:
  BatchSampler(std::shared_ptr<Sampler> sampler, int64_t batch_size, bool drop_last);
  virtual ~BatchSampler() = default;

  // The index lists of one epoch, in order.
  virtual std::vector<std::vector<int64_t>> batches();
  // Batches per epoch.
  virtual int64_t size() const;
  virtual void set_epoch(int64_t epoch) { sampler_->set_epoch(epoch); }

  const std::shared_ptr<Sampler>& sampler() const { return sampler_; }
  int64_t batch_size() const { return batch_size_; }
  bool drop_last() const { return drop_last_; }

 private:
  std::shared_ptr<Sampler> sampler_;
  int64_t batch_size_;
  bool drop_last_;
};

}  // namespace loom::data
