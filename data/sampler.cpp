// SequentialSampler and RandomSampler.
#include "data/sampler.h"

#include <numeric>

#include "data/rng.h"
#include "core/error.h"

namespace loom::data {

SequentialSampler::SequentialSampler(int64_t n) : n_(n) {
  LOOM_VALUE_CHECK(n >= 0, "SequentialSampler: the number of samples must be >= 0, got ", n);
}

std::vector<int64_t> SequentialSampler::indices() {
  std::vector<int64_t> out(static_cast<size_t>(n_));
  std::iota(out.begin(), out.end(), int64_t(0));
  return out;
}

RandomSampler::RandomSampler(int64_t n, uint64_t seed) : n_(n), seed_(seed) {
  LOOM_VALUE_CHECK(n >= 0, "RandomSampler: the number of samples must be >= 0, got ", n);
}

std::vector<int64_t> RandomSampler::indices() { return seeded_permutation(n_, seed_, epoch_++); }

}  // namespace loom::data
