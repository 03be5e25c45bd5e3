// DistributedSampler: PyTorch's padding and striding rule (see the header).
#include "data/distributed_sampler.h"

#include <numeric>

#include "data/rng.h"
#include "core/error.h"

namespace loom::data {

DistributedSampler::DistributedSampler(int64_t dataset_size, int64_t num_replicas, int64_t rank,
                                       bool shuffle, uint64_t seed, bool drop_last)
    : dataset_size_(dataset_size),
      num_replicas_(num_replicas),
      rank_(rank),
      shuffle_(shuffle),
      seed_(seed),
      drop_last_(drop_last) {
  LOOM_VALUE_CHECK(dataset_size >= 0, "DistributedSampler: dataset_size must be >= 0, got ",
                   dataset_size);
  LOOM_VALUE_CHECK(num_replicas >= 1, "DistributedSampler: num_replicas must be >= 1, got ",
                   num_replicas);
  LOOM_VALUE_CHECK(rank >= 0 && rank < num_replicas, "DistributedSampler: invalid rank ", rank,
                   ", rank should be in the interval [0, ", num_replicas - 1, "]");
  // Dropping keeps floor(N / R) per rank; padding gives ceil(N / R).
  num_samples_ =
      drop_last ? dataset_size / num_replicas : (dataset_size + num_replicas - 1) / num_replicas;
}

void DistributedSampler::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  epoch_set_explicitly_ = true;
}

std::vector<int64_t> DistributedSampler::indices() {
  std::vector<int64_t> order;
  if (shuffle_) {
    order = seeded_permutation(dataset_size_, seed_, epoch_);
  } else {
    order.resize(size_t(dataset_size_));
    std::iota(order.begin(), order.end(), int64_t(0));
  }
  const int64_t total = total_size();
  if (int64_t(order.size()) > total) {
    order.resize(size_t(total));  // drop_last: the tail that would make shares unequal
  } else if (!order.empty()) {
    // Pad by wrapping around the order from its start, as many times as needed.
    const size_t n = order.size();
    for (size_t i = 0; order.size() < size_t(total); ++i) {
      int64_t repeated = order[i % n];
      order.push_back(repeated);
    }
  }
  std::vector<int64_t> mine;
  mine.reserve(size_t(num_samples_));
  for (int64_t i = rank_; i < total && i < int64_t(order.size()); i += num_replicas_)
    mine.push_back(order[size_t(i)]);
  return mine;
}

}  // namespace loom::data
