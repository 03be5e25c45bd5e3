// DistributedSampler: each of num_replicas ranks visits its own disjoint, equal-size share.
//
// Exactly PyTorch's rule, so a loom job and a PyTorch job split a dataset the same way:
//   total = drop_last ? floor(N / R) * R : ceil(N / R) * R      (N examples, R replicas)
//   order = shuffle ? permutation(seed, epoch) : 0..N-1          (identical on every rank)
//   without drop_last, order is padded to `total` by repeating it from its start (wrapping
//   around as often as needed when N < total - N); with drop_last it is cut to `total`.
//   rank r takes order[r], order[r + R], order[r + 2R], ...  (total / R indices)
// The epoch never advances by itself (Note [Sampler epochs] in data/sampler.h): call
// set_epoch() before each epoch, or let Fabric do it, which it does only when
// epoch_set_explicitly() is false.
#pragma once

#include "data/sampler.h"

namespace loom::data {

class DistributedSampler : public Sampler {
 public:
  // dataset_size examples split over num_replicas ranks; this sampler serves `rank`.
  DistributedSampler(int64_t dataset_size, int64_t num_replicas, int64_t rank, bool shuffle = true,
                     uint64_t seed = 0, bool drop_last = false);

  std::vector<int64_t> indices() override;  // this rank's share for epoch()
  int64_t size() const override { return num_samples_; }
  // Marks the epoch as set by the caller (Fabric then leaves it alone).
  void set_epoch(int64_t epoch) override;

  int64_t epoch() const { return epoch_; }
  bool epoch_set_explicitly() const { return epoch_set_explicitly_; }
  // Fabric's automatic advance: sets the epoch without marking it explicit.
  void advance_epoch(int64_t epoch) { epoch_ = epoch; }

  int64_t dataset_size() const { return dataset_size_; }
  int64_t num_replicas() const { return num_replicas_; }
  int64_t rank() const { return rank_; }
  bool shuffle() const { return shuffle_; }
  uint64_t seed() const { return seed_; }
  bool drop_last() const { return drop_last_; }
  int64_t total_size() const { return num_samples_ * num_replicas_; }  // over all ranks

 private:
  int64_t dataset_size_;
  int64_t num_replicas_;
  int64_t rank_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  int64_t num_samples_;  // per rank
  int64_t epoch_ = 0;
  bool epoch_set_explicitly_ = false;
};

}  // namespace loom::data
